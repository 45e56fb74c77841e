"""Trainer, configuration, metrics and CLI on small slices of the real HAPT recordings."""
from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from training.cli import main
from training.config import DEFAULT_CONFIG_PATH, ConfigError, TrainConfig, load_train_config, parse_override
from training.cv import cross_validate
from training.data import fit_normalization, normalize
from training.datasets import load_dataset
from training.metrics import classification_report
from training.models import VARIANTS, create_model
from training.train import fit, load_windows, lr_factor, split_subjects

pytestmark = pytest.mark.slow  # trains real models (seconds each): `make test-fast` leaves these out

torch.set_num_threads(1)

SUBJECTS = [1, 3, 5]
CV_CONFIGS = DEFAULT_CONFIG_PATH.parent / "cv"  # one JSON per `make cv` run


@pytest.fixture(scope="module")
def windows(hapt_zip):
    return load_dataset(hapt_zip, subjects=SUBJECTS)  # real front-end windows of three users


def _quick(**overrides) -> TrainConfig:
    # Mount alignment off unless a test asks for it: the tests below compare with the raw windows' statistics.
    base = {"model": "tcn_tiny", "epochs": 2, "batch_size": 32, "max_batches_per_epoch": 6, "warmup_epochs": 1,
            "num_threads": 1, "progress": False, "align_mount": False}
    return load_train_config(None, {**base, **overrides})


def test_loss_goes_down_on_real_windows(windows):
    torch.manual_seed(0)
    mean, std = fit_normalization(windows.X)
    X = torch.from_numpy((windows.X - mean) / std)  # (N, 128, 9)
    y = torch.from_numpy(windows.y)
    model = create_model("tcn_tiny", dropout=0.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    probe = torch.randperm(len(X))[:128]

    def probe_loss():
        # Train mode (batch statistics; no dropout): a few steps are too few for BN running statistics.
        with torch.no_grad():
            return float(model.training_loss(X[probe], y[probe])[1]["ce"])

    start = probe_loss()
    model.train()
    for _ in range(30):
        idx = torch.randint(0, len(X), (32,))
        loss, _ = model.training_loss(X[idx], y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    end = probe_loss()
    assert end < 0.7 * start, (start, end)


@pytest.mark.parametrize("name", ["tcn_tiny", "bilm"])
def test_label_smoothing_reaches_the_training_loss(name, windows, monkeypatch):
    # The option reaches the loss each architecture trains on: same weights, same logits, smoothed CE.
    torch.manual_seed(0)
    mean, std = fit_normalization(windows.X)
    X = torch.from_numpy((windows.X[:64] - mean) / std)  # (64, 128, 9)
    y = torch.from_numpy(windows.y[:64])
    config = _quick(model=name, label_smoothing=0.2)
    plain, smoothed = create_model(name), create_model(name, **config.model_overrides())  # as fit() builds it
    smoothed.load_state_dict(plain.state_dict())
    if name == "bilm":  # classify mu instead of a random draw, so both losses see the same logits
        monkeypatch.setattr(type(plain), "reparameterize", staticmethod(lambda mu, logvar: mu))
    for model in (plain, smoothed):
        model.eval()  # no dropout, BN running statistics
    with torch.no_grad():
        logits = plain.classifier_module()(X)  # (64, 6)
        ce_plain = float(torch.nn.functional.cross_entropy(logits, y))
        ce_smooth = float(torch.nn.functional.cross_entropy(logits, y, label_smoothing=0.2))
        assert float(plain.training_loss(X, y)[1]["ce"]) == pytest.approx(ce_plain, rel=1e-5)
        assert float(smoothed.training_loss(X, y)[1]["ce"]) == pytest.approx(ce_smooth, rel=1e-5)
    assert smoothed.config.label_smoothing == 0.2 and abs(ce_smooth - ce_plain) > 1e-5


def test_fit_writes_the_report_and_uses_train_subjects_only(windows, tmp_path):
    metrics = fit(_quick(val_subjects=[5]), tmp_path, windows=windows)
    for name in ("model.pt", "metrics.json", "confusion.txt", "confusion.png", "curves.png", "norm.json"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert metrics["train_subjects"] == [1, 3] and metrics["val_subjects"] == [5]
    report = json.loads((tmp_path / "metrics.json").read_text())
    val = report["val"]
    assert set(val["per_class"]) == set(windows.classes)
    assert sum(map(sum, val["confusion"])) == val["n_windows"] == int((windows.subject == 5).sum())
    assert 1 <= report["best_epoch"] <= 2 and report["train_seconds_per_epoch"] > 0
    # Normalization statistics come from subjects 1 and 3 only, never from the held-out subject 5.
    norm = json.loads((tmp_path / "norm.json").read_text())
    train_mean, _ = fit_normalization(windows.of_subjects([1, 3]).X)
    all_mean, _ = fit_normalization(windows.X)
    assert np.allclose(norm["mean"], train_mean, atol=1e-6)
    assert not np.allclose(norm["mean"], all_mean, atol=1e-6)
    assert norm["fit_on_subjects"] == [1, 3]


def test_train_hop_trains_on_denser_windows_and_validates_on_the_device_hop(hapt_zip, tmp_path):
    config = _quick(data=str(hapt_zip), subjects=SUBJECTS, val_subjects=[5], train_hop=32, epochs=1)
    device_windows, train_windows = load_windows(config)
    # Same segments, same front-end: every device window (hop 64) is also a training window (hop 32),
    # bit for bit, and the training set has about twice as many.
    device_keys = {(e, s): i for i, (e, s) in enumerate(zip(device_windows.experiment, device_windows.start))}
    train_keys = {(e, s): i for i, (e, s) in enumerate(zip(train_windows.experiment, train_windows.start))}
    assert set(device_keys) < set(train_keys)
    for key in list(device_keys)[::50]:
        assert np.array_equal(device_windows.X[device_keys[key]], train_windows.X[train_keys[key]])
    assert 1.8 < len(train_windows) / len(device_windows) < 2.1
    metrics = fit(config, tmp_path, windows=device_windows, train_windows=train_windows)
    assert metrics["n_train_windows"] == int(np.isin(train_windows.subject, [1, 3]).sum())
    assert metrics["n_val_windows"] == int((device_windows.subject == 5).sum())  # validation keeps hop 64
    # The statistics are fitted on the training windows of the training subjects.
    norm = json.loads((tmp_path / "norm.json").read_text())
    assert np.allclose(norm["mean"], fit_normalization(train_windows.of_subjects([1, 3]).X)[0], atol=1e-6)


def test_train_all_keeps_the_last_epoch_and_says_so(windows, tmp_path):
    metrics = fit(_quick(train_all=True, epochs=1, ema=True), tmp_path, windows=windows)
    assert metrics["val_subjects"] == [] and "val" not in metrics
    assert "train_all" in metrics["selection"] and "EMA" in metrics["selection"]
    assert not (tmp_path / "confusion.txt").exists()


def test_fit_is_reproducible_with_a_fixed_seed(windows, tmp_path):
    a = fit(_quick(val_subjects=[5], epochs=1, max_batches_per_epoch=3), tmp_path / "a", windows=windows)
    b = fit(_quick(val_subjects=[5], epochs=1, max_batches_per_epoch=3), tmp_path / "b", windows=windows)
    assert a["history"][0]["train_loss"] == b["history"][0]["train_loss"]
    assert a["val"]["confusion"] == b["val"]["confusion"]


def test_cross_validation_holds_each_subject_out_once(hapt_zip, tmp_path):
    config = _quick(data=str(hapt_zip), subjects=SUBJECTS, folds=3, epochs=1, max_batches_per_epoch=3)
    summary = cross_validate(config, tmp_path)
    held_out = sorted(s for fold in summary["per_fold"] for s in fold["val_subjects"])
    assert held_out == SUBJECTS
    accuracies = [f["accuracy"] for f in summary["per_fold"]]
    assert summary["accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert summary["accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    assert (tmp_path / "cv_summary.json").exists() and (tmp_path / "fold_2" / "model.pt").exists()


def test_split_subjects():
    subjects = [1, 3, 5, 6, 7]
    train, val = split_subjects(TrainConfig(folds=5, val_fold=0), subjects)
    assert len(val) == 1 and sorted(train + val) == subjects
    assert split_subjects(TrainConfig(val_subjects=[3, 7]), subjects) == ([1, 5, 6], [3, 7])
    assert split_subjects(TrainConfig(train_all=True), subjects) == (subjects, [])
    with pytest.raises(ConfigError, match=r"val_subjects \[2\]"):
        split_subjects(TrainConfig(val_subjects=[2]), subjects)


def test_warmup_then_cosine():
    factors = [lr_factor(s, 10, 110) for s in range(110)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(factors[9:], factors[10:]))


# ---- configuration --------------------------------------------------------------------------------
def test_default_json_shows_the_dataclass_defaults():
    data = json.loads(DEFAULT_CONFIG_PATH.read_text())
    data.pop("_comment")
    assert data == TrainConfig().to_dict()
    assert load_train_config(DEFAULT_CONFIG_PATH) == TrainConfig()


@pytest.mark.parametrize("path", sorted(CV_CONFIGS.glob("*.json")), ids=lambda p: p.stem)
def test_every_make_cv_run_is_a_valid_named_config(path):
    data = json.loads(path.read_text())
    config = load_train_config(path)
    assert config.model in VARIANTS and path.stem in data["_comment"]
    assert all(getattr(config, k) == v for k, v in data.items() if not k.startswith("_"))


def test_overrides_are_parsed_by_type():
    cfg = load_train_config(None, ["epochs=7", "lr=1e-3", "ema=true", "model=tcn_base", "subjects=1,3,5",
                                   "val_subjects=[5]", "model_options.hidden=48", "weight_decay=0"])
    assert (cfg.epochs, cfg.lr, cfg.ema, cfg.model) == (7, 1e-3, True, "tcn_base")
    assert cfg.subjects == [1, 3, 5] and cfg.val_subjects == [5]
    assert cfg.model_options == {"hidden": 48} and cfg.weight_decay == 0.0
    assert parse_override("data=../x=y.zip") == ("data", "../x=y.zip")


@pytest.mark.parametrize("override, message", [
    ("epoch=3", r"unknown config key\(s\) \['epoch'\].*valid keys: model, .*epochs"),
    ("epochs=three", r"'epochs'.*not a valid int"),
    ("ema=maybe", r"'ema'.*not a valid bool"),
    ("epochs", r"key=value"),
    ("lr=-1", r"lr=-1.0 must be > 0"),
    ("train_hop=0", r"train_hop=0 must be in 1..128"),
    ("intensity_scale=1.5", r"intensity_scale=1.5 must be in \[0, 1\)"),
    ("label_smoothing=1", r"label_smoothing=1.0 must be in \[0, 1\)"),
    ("model_opts.hidden=3", r"unknown config key\(s\) \['model_opts'\]"),
])
def test_bad_overrides_are_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, [override])


def test_bad_config_files_are_named(tmp_path):
    bad_key = tmp_path / "bad_key.json"
    bad_key.write_text('{"epochs": 3, "learning_rate": 0.1}')
    with pytest.raises(ConfigError, match=r"\['learning_rate'\] in .*bad_key.json; valid keys"):
        load_train_config(bad_key)
    broken = tmp_path / "broken.json"
    broken.write_text('{\n "epochs": 3,\n}')
    with pytest.raises(ConfigError, match=r"broken.json, line 3: not valid JSON"):
        load_train_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_train_config(tmp_path / "missing.json")


# ---- metrics --------------------------------------------------------------------------------------
def test_metrics_agree_with_sklearn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 6, 500)
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.integers(0, 6, 500))
    y_pred[y_pred == 4] = 3  # class 4 never predicted: precision 0 by convention
    classes = [f"c{i}" for i in range(6)]
    report = classification_report(y_true, y_pred, classes)
    assert report["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(y_true, y_pred))
    assert report["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(y_true, y_pred, average="macro", zero_division=0))
    precision = sklearn_metrics.precision_score(y_true, y_pred, average=None, zero_division=0)
    recall = sklearn_metrics.recall_score(y_true, y_pred, average=None, zero_division=0)
    assert [report["per_class"][c]["precision"] for c in classes] == pytest.approx(precision)
    assert [report["per_class"][c]["recall"] for c in classes] == pytest.approx(recall)
    assert report["confusion"] == sklearn_metrics.confusion_matrix(y_true, y_pred).tolist()


# ---- CLI ------------------------------------------------------------------------------------------
def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    assert main(["fit", "--out", str(tmp_path), "--set", "epochz=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("har-train: error: unknown config key(s) ['epochz']") and "Traceback" not in err
    assert main(["cv", "--out", str(tmp_path), "--model", "tcn_nope"]) == 2
    assert "unknown model 'tcn_nope'" in capsys.readouterr().err
    assert main(["fit", "--out", str(tmp_path), "--set", f"data={tmp_path / 'none.zip'}", "--set", "num_threads=1"]) == 2
    assert "none.zip" in capsys.readouterr().err


def test_cli_models_lists_every_variant(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["description"]) for r in rows] == [(v.name, v.description) for v in VARIANTS.values()]
    assert {r["name"] for r in rows} >= {"tcn_base", "tcn_physics", "tcn_physics_h64", "tcn_physics_h32", "bilm"}
    assert all(r["params"] > 0 and r["macs"] > 0 and r["receptive_field"] >= 125 for r in rows)


def test_cli_fit_end_to_end(hapt_zip, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["fit", "--out", str(out), "--model", "tcn_tiny", "--set", f"data={hapt_zip}",
                 "--set", "subjects=[1,3]", "--set", "val_subjects=[3]", "--set", "epochs=1",
                 "--set", "max_batches_per_epoch=3", "--set", "num_threads=1", "--set", "progress=false"])
    assert code == 0
    assert "val accuracy" in capsys.readouterr().out
    assert (out / "model.pt").exists()
    # A second fit into the finished run is refused (an interrupted one used to leave the old model.pt
    # beside the new run's state); --force replaces it; a file is not a run folder.
    first = (out / "model.pt").read_bytes()
    again = ["fit", "--out", str(out), "--model", "tcn_tiny", "--set", f"data={hapt_zip}", "--set", "subjects=[1,3]",
             "--set", "val_subjects=[3]", "--set", "epochs=1", "--set", "max_batches_per_epoch=3",
             "--set", "num_threads=1", "--set", "progress=false", "--set", "seed=7"]
    assert main(again) == 2
    assert f"--out {out} holds a finished run (model.pt); choose a new --out, or --force" in capsys.readouterr().err
    assert (out / "model.pt").read_bytes() == first
    assert main(again + ["--force"]) == 0 and (out / "model.pt").read_bytes() != first
    (tmp_path / "afile").write_text("x")
    assert main(["fit", "--out", str(tmp_path / "afile"), "--set", "epochs=1"]) == 2
    assert "is a file; give a folder for the run" in capsys.readouterr().err


def test_one_class_is_refused_not_scored_perfect(windows):
    from training.train import check_class_coverage

    user1 = windows.of_subjects([1])
    walking = user1.y == 0
    one = replace(user1, **{k: getattr(user1, k)[walking] for k in ("X", "y", "subject", "experiment", "start")})
    with pytest.raises(ConfigError, match=r"1 class\(es\) only \(WALKING\); a classifier needs at least two"):
        check_class_coverage(one, "the training subjects [1]")


def test_align_mount_stores_the_mount_and_aligns_every_subject_by_its_own_reference(windows, tmp_path):
    from edge.mount import MountConfig, align_by_subject, canonical_direction, reference_direction

    from training.checkpoint import read_checkpoint
    from training.data import checkpoint_inputs

    fit(_quick(val_subjects=[5], epochs=1, align_mount=True), tmp_path, windows=windows)
    checkpoint = read_checkpoint(tmp_path / "model.pt")
    mount = MountConfig.from_dict(checkpoint["mount"])
    # The canonical direction is the training subjects' (1, 3) mean reference, not the held-out subject's.
    expected = canonical_direction([reference_direction(windows.X[windows.subject == s], mount) for s in (1, 3)])
    np.testing.assert_allclose(mount.canonical, expected, atol=1e-9)
    # Normalization was fitted on the aligned training windows; inputs for evaluation are aligned the same way.
    train = windows.of_subjects([1, 3])
    aligned_mean, _ = fit_normalization(align_by_subject(train.X, train.subject, mount))
    np.testing.assert_allclose(checkpoint["norm"]["mean"], aligned_mean, atol=1e-6)
    held_out = windows.of_subjects([5])
    inputs = checkpoint_inputs(held_out, checkpoint)  # (n, 128, 9) normalized
    un_normalized = inputs * np.asarray(checkpoint["norm"]["std"]) + np.asarray(checkpoint["norm"]["mean"])
    np.testing.assert_allclose(reference_direction(un_normalized, mount), mount.canonical, atol=1e-4)
    plain = fit(_quick(val_subjects=[5], epochs=1, align_mount=False), tmp_path / "plain", windows=windows)
    assert plain["val_subjects"] == [5] and read_checkpoint(tmp_path / "plain" / "model.pt")["mount"] is None


def test_mount_unaligned_fraction_feeds_some_windows_as_an_uncalibrated_device_sees_them(windows, tmp_path,
                                                                                        monkeypatch):
    """With align_mount and mount_unaligned_fraction=0.5, every training batch is a mix: each window either
    rotated by its wearer's reference or as recorded (both normalized with the same statistics)."""
    from edge.mount import MountConfig, align_by_subject

    from training.checkpoint import read_checkpoint
    from training.models import create_model

    seen = []
    model_class = type(create_model("tcn_tiny"))
    original = model_class.training_loss

    def spy(self, x, y):
        seen.append(x.detach().clone())
        return original(self, x, y)

    monkeypatch.setattr(model_class, "training_loss", spy)
    config = _quick(val_subjects=[5], epochs=1, max_batches_per_epoch=4, align_mount=True,
                    mount_unaligned_fraction=0.5)
    fit(config, tmp_path, windows=windows)
    checkpoint = read_checkpoint(tmp_path / "model.pt")
    train = windows.of_subjects([1, 3])
    mean, std = (np.asarray(checkpoint["norm"][k], np.float32) for k in ("mean", "std"))
    aligned = normalize(align_by_subject(train.X, train.subject, MountConfig.from_dict(checkpoint["mount"])), mean, std)
    raw = normalize(train.X, mean, std)
    batch = torch.cat(seen).numpy()  # (4 * 32, 128, 9)
    # Each window fed is one of the training windows, aligned or not (match by nearest row).
    flat_aligned, flat_raw = aligned.reshape(len(train), -1), raw.reshape(len(train), -1)
    kinds = []
    for x in batch.reshape(len(batch), -1):
        d_aligned = np.abs(flat_aligned - x).max(axis=1).min()
        d_raw = np.abs(flat_raw - x).max(axis=1).min()
        assert min(d_aligned, d_raw) < 1e-5
        kinds.append(d_raw < d_aligned)
    assert 0.3 < np.mean(kinds) < 0.7  # about half unaligned
