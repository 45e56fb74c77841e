"""Models: every variant builds and classifies, BN folding is exact, the summary counts are right."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from training.models import (
    VARIANTS,
    BiLMClassifier,
    ModelConfig,
    ModelConfigError,
    PhysicsModernTCNHAR,
    count_macs,
    create_model,
    list_models,
    model_summary,
    receptive_field,
    register_model,
)

torch.set_num_threads(1)


def _windows(batch=8, seed=0):
    """Realistic normalized windows: smooth periodic motion per channel plus noise, (B, 128, 9)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(128).float() / 50.0  # seconds at 50 Hz
    freq = 0.5 + 2.0 * torch.rand(batch, 1, 9, generator=g)  # gait-like 0.5..2.5 Hz
    phase = 6.28 * torch.rand(batch, 1, 9, generator=g)
    x = torch.sin(6.28 * freq * t[None, :, None] + phase)  # (B, 128, 9)
    return x + 0.2 * torch.randn(batch, 128, 9, generator=g)


def _fuse_all(model):
    for module in list(model.modules()):
        if hasattr(module, "fuse") and module is not model:
            module.fuse()


def _randomize_bn(model, seed=1):
    """Non-trivial BN statistics and affine parameters, so that folding has something to fold."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            m.running_mean.copy_(0.5 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.3 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.3 * torch.randn(m.num_features, generator=g))


@pytest.mark.parametrize("name", list_models())
def test_variant_gives_logits_and_a_trainable_loss(name):
    model = create_model(name)
    x, y = _windows(), torch.arange(8) % 6
    model.train()
    loss, parts = model.training_loss(x, y)
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert "ce" in parts and all(not v.requires_grad for v in parts.values())
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads), "every parameter takes part in the training loss"
    model.eval()
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (8, 6) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("pre_norm", [False, True])
def test_fuse_keeps_logits(name, pre_norm):
    model = create_model(name, pre_norm=pre_norm)
    _randomize_bn(model)
    model.eval()
    x = _windows(seed=2)
    with torch.no_grad():
        before = model(x)
    _fuse_all(model)
    _fuse_all(model)  # idempotent
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max().item() < 1e-4
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)]
    # Only the optional pre-norm BN (before a zero-padded conv) is left unfused, by design.
    assert all(n.endswith("pre_norm") for n in bns), bns
    assert (len(bns) > 0) == (pre_norm and model.config.arch == "tcn")


def test_fuse_refuses_training_mode():
    model = create_model("tcn_tiny").train()
    with pytest.raises(RuntimeError, match="eval"):
        model.backbone.large_kernel_conv.fuse()


def test_time_length_is_kept_and_bilm_eval_is_deterministic():
    x = _windows(4)
    tcn = create_model("tcn_tiny").eval()
    assert tcn.backbone.features(x).shape == (4, 16, 128)  # 'same' padding everywhere, T stays 128
    bilm = create_model("bilm").eval()
    with torch.no_grad():
        assert torch.equal(bilm(x), bilm(x))  # eval classifies mu, no sampling
        mu, _ = bilm.encoder(x)
        assert torch.allclose(bilm(x), bilm.classifier(mu))


def test_bilm_biomech_loss_reads_a_real_temporal_latent_trajectory():
    bilm = create_model("bilm").eval()
    x = _windows(4)
    with torch.no_grad():
        mu, logvar, trajectory = bilm.encoder.encode_with_trajectory(x)
    assert trajectory.shape == (4, 128 // 8, bilm.config.latent_dim)  # one latent per 8-sample step
    # Deterministic (no injected noise): the differences over time come from the signal itself.
    with torch.no_grad():
        again = bilm.encoder.encode_with_trajectory(x)[2]
    assert torch.equal(trajectory, again)
    # A window whose second half differs gives a trajectory that differs only from there on
    # (plus the conv trunk's receptive field of 36 samples), i.e. each step encodes its own time.
    x2 = x.clone()
    x2[:, 96:] = -x2[:, 96:]
    with torch.no_grad():
        trajectory2 = bilm.encoder.encode_with_trajectory(x2)[2]
    step_changed = (trajectory2 - trajectory).abs().amax(dim=(0, 2)) > 1e-6  # (16,)
    assert not step_changed[:8].any() and step_changed[12:].all()
    with torch.no_grad():
        loss, parts = bilm.biomech_module.biomechanical_loss(trajectory, mu)
    assert torch.isfinite(loss) and set(parts) >= {"velocity_consistency", "accel_consistency", "anchor"}


def test_classifier_module_is_the_classification_path_only():
    physics = create_model("tcn_physics_h32").eval()
    path = physics.classifier_module()
    names = [n for n, _ in path.named_parameters()]
    assert not any("physics" in n for n in names)
    x = _windows(3)
    with torch.no_grad():
        assert torch.equal(path(x), physics(x))
    bilm = create_model("bilm").eval()
    bilm_path = bilm.classifier_module()
    assert not any(n.startswith(("decoder", "biomech")) for n, _ in bilm_path.named_parameters())
    with torch.no_grad():
        assert torch.equal(bilm_path(x), bilm(x))


def test_physics_head_regresses_the_first_six_channels():
    model = create_model("tcn_tiny")
    assert isinstance(model, PhysicsModernTCNHAR)
    logits, physics = model.forward_with_physics(_windows(2))
    assert logits.shape == (2, 6) and physics.shape == (2, 128, 6)


def _analytic_tcn_macs(c, layers, kernels=(3, 7), k_large=21, r=8, t=128, n_in=9, n_cls=6):
    macs = t * n_in * c + 2 * t * c * k_large  # input projection, two large-kernel depthwise convs
    for _ in range(layers):
        macs += sum(t * c * k + t * c * c for k in kernels)  # branches: depthwise + pointwise
        macs += t * (c * len(kernels)) * c  # 1x1 fusion
        macs += t * c * max(kernels) + t * c * c  # conv2 (DS)
    return macs + 2 * c * (c // r) + c * n_cls  # SE MLP, head


@pytest.mark.parametrize("name", ["tcn_base", "tcn_physics_h64", "tcn_physics_h32"])
def test_macs_match_the_analytic_count(name):
    model = create_model(name)
    cfg = model.config
    assert model_summary(model)["macs"] == _analytic_tcn_macs(cfg.hidden, cfg.n_layers)


def test_receptive_field_is_the_seed_formula():
    # seed 000: rf(2) = 77, rf(3) = 125, rf(4) = 221
    assert [receptive_field(ModelConfig(n_layers=n)) for n in (2, 3, 4)] == [77, 125, 221]
    assert model_summary(create_model("bilm"))["receptive_field"] == 128


def test_seed_model_size_matches_the_reference():
    # toolchain.md measured the seed's BaseModernTCNHAR (hidden 128, 3 blocks, SE) at 270k parameters.
    assert abs(model_summary(create_model("tcn_base"))["params"] - 270_000) < 1_000


def test_count_macs_of_a_single_linear():
    assert count_macs(nn.Linear(9, 4), (5, 9)) == 5 * 9 * 4


def test_factory_errors_name_the_problem():
    with pytest.raises(ModelConfigError, match="unknown model 'tcn_huge'.*tcn_physics"):
        create_model("tcn_huge")
    with pytest.raises(ModelConfigError, match="hiden.*hidden"):
        create_model("tcn_base", hiden=64)
    with pytest.raises(ModelConfigError, match="kernel_sizes.*odd"):
        create_model("tcn_base", kernel_sizes=(3, 6))
    with pytest.raises(ModelConfigError, match="arch"):
        create_model("tcn_base", arch="lstm")
    assert set(VARIANTS) >= {"tcn_base", "tcn_physics", "tcn_physics_h64", "tcn_physics_h32", "bilm"}


def test_each_variant_is_one_registry_entry():
    assert list_models() == list(VARIANTS) and all(v.name == k and v.description for k, v in VARIANTS.items())
    assert create_model("tcn_physics_h64").config == VARIANTS["tcn_physics_h64"].config
    with pytest.raises(ModelConfigError, match="'bilm' is registered twice"):
        register_model("bilm", ModelConfig(arch="bilm"), "a second bilm")
    assert VARIANTS["bilm"].description.startswith("BiLM VAE")


def test_config_round_trips_through_a_dict():
    cfg = create_model("tcn_physics_h64", drop_path=0.1).config
    assert ModelConfig(**cfg.to_dict()) == cfg
    assert isinstance(create_model("bilm"), BiLMClassifier)
