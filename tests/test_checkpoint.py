"""Checkpoint round trip (weights_only=True) and clear errors for wrong or corrupt files."""
from __future__ import annotations

from dataclasses import asdict

import pytest
import torch

from edge.frontend import CLASSES as CLASS_NAMES
from edge.frontend import FrontEndConfig

from training.checkpoint import FORMAT, CheckpointError, load_checkpoint, make_checkpoint, save_checkpoint
from training.data import fit_normalization
from training.datasets import load_dataset
from training.models import create_model

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def real_windows(hapt_zip):
    windows = load_dataset(hapt_zip, subjects=[1])
    mean, std = fit_normalization(windows.X)
    return torch.from_numpy((windows.X[:16] - mean) / std), mean, std  # (16, 128, 9)


def _perturbed(name):
    """A model whose weights and BN statistics are not the initial ones (as after training)."""
    torch.manual_seed(3)
    model = create_model(name)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.normal_(0, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _checkpoint(model, mean, std, name):
    return make_checkpoint(model, model_name=name, train_config={"model": name, "epochs": 1}, classes=CLASS_NAMES,
                           channels=[f"ch{i}" for i in range(9)], mean=mean, std=std,
                           frontend=asdict(FrontEndConfig()), metrics={"val": {"accuracy": 0.5}},
                           train_subjects=[1, 3], val_subjects=[5])


@pytest.mark.parametrize("name", ["tcn_physics_h32", "bilm"])
def test_round_trip_gives_the_same_logits(name, real_windows, tmp_path):
    x, mean, std = real_windows
    model = _perturbed(name)
    path = save_checkpoint(tmp_path / "model.pt", _checkpoint(model, mean, std, name))
    raw = torch.load(path, weights_only=True)  # plain types and tensors only
    assert raw["format"] == FORMAT
    assert set(raw) >= {"model_name", "model_config", "state_dict", "train_config", "classes", "channels",
                        "norm", "frontend", "metrics", "subjects"}
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert ckpt["norm"]["mean"] == pytest.approx(mean.tolist())
    assert ckpt["subjects"] == {"train": [1, 3], "val": [5]}
    assert ckpt["frontend"] == asdict(FrontEndConfig())
    assert loaded.config == model.config


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_corrupt_and_truncated_files(real_windows, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file\n" * 10)
    with pytest.raises(CheckpointError, match="junk.pt is not a torch checkpoint .* give the model.pt"):
        load_checkpoint(junk)
    _, mean, std = real_windows
    good = save_checkpoint(tmp_path / "good.pt", _checkpoint(_perturbed("tcn_tiny"), mean, std, "tcn_tiny"))
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt is not a readable torch file"):
        load_checkpoint(truncated)


class _Custom:  # a pickled class: refused by weights_only=True
    pass


def test_pickled_objects_and_foreign_files_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "payload": _Custom()}, evil)
    with pytest.raises(CheckpointError, match="evil.pt holds objects other than plain types"):
        load_checkpoint(evil)
    plain_state = tmp_path / "state.pt"
    torch.save(create_model("tcn_tiny").state_dict(), plain_state)
    with pytest.raises(CheckpointError, match="state.pt is not a har-checkpoint/1 file"):
        load_checkpoint(plain_state)


def test_weights_that_do_not_fit_the_config(real_windows, tmp_path):
    _, mean, std = real_windows
    ckpt = _checkpoint(_perturbed("tcn_tiny"), mean, std, "tcn_tiny")
    ckpt["model_config"]["hidden"] = 24
    path = save_checkpoint(tmp_path / "mismatch.pt", ckpt)
    with pytest.raises(CheckpointError, match="mismatch.pt: weights do not fit model 'tcn_tiny'"):
        load_checkpoint(path)
    del ckpt["norm"]
    path = save_checkpoint(tmp_path / "partial.pt", ckpt)
    with pytest.raises(CheckpointError, match=r"lacks key\(s\) \['norm'\]"):
        load_checkpoint(path)
