"""Fine-tuning from a checkpoint (head replaced when the class set changes), resuming an interrupted run,
and `har-train evaluate` against a hand count, on real HAPT windows with the tiny model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import STATE_FILE, head_keys, init_from_checkpoint, load_checkpoint
from training.cli import main as har_train
from training.config import ConfigError, load_train_config
from training.datasets import load_dataset
from training.train import fit

from helpers import own_recordings

torch.set_num_threads(1)
QUICK = {"model": "tcn_tiny", "epochs": 2, "batch_size": 32, "max_batches_per_epoch": 6, "warmup_epochs": 1,
         "num_threads": 1, "progress": False, "device": "cpu"}


def quick(data, **overrides):
    return load_train_config(None, {**QUICK, "data": str(data), "train_all": True, **overrides})


trains = pytest.mark.slow  # the test trains a model (seconds): `make test-fast` leaves it out

@pytest.fixture(scope="module")
def six_class_run(tmp_path_factory, hapt_user1_dir):
    """A real (tiny) six-class model trained on user 1's HAPT windows."""
    out = tmp_path_factory.mktemp("six")
    fit(quick(hapt_user1_dir), out, say=lambda m: None)
    return out


@pytest.fixture(scope="module")
def seven_class_data(tmp_path_factory, hapt_user1_dir):
    return own_recordings(tmp_path_factory.mktemp("seven") / "data", hapt_user1_dir)


@trains
def test_fine_tuning_replaces_the_head_for_a_new_class_and_moves_the_model(six_class_run, seven_class_data, tmp_path):
    init = six_class_run / "model.pt"
    _, old = load_checkpoint(init)
    classes = [*old["classes"], "TRANSITION"]
    model, _, message = init_from_checkpoint(init, classes)
    assert "class set changed" in message and "new: ['TRANSITION']" in message
    head = set(head_keys(old["model_config"]))
    assert head and all(k.endswith(("head.weight", "head.bias")) for k in head)
    start = model.state_dict()
    for key, value in old["state_dict"].items():
        if key in head:  # the six known rows copied, the new one initialized afresh
            assert torch.equal(start[key][:6], value) and start[key].shape[0] == 7
        else:
            assert torch.equal(start[key], value)
    notes = []
    metrics = fit(quick(seven_class_data, init=str(init), epochs=2), tmp_path, say=notes.append)
    assert any("the classification head is replaced" in n for n in notes)
    tuned, ckpt = load_checkpoint(tmp_path / "model.pt")
    assert ckpt["classes"] == classes and metrics["init"] == str(init)
    assert ckpt["norm"] == old["norm"]  # fine-tuning keeps the statistics the weights expect
    moved = [k for k, v in old["state_dict"].items() if k not in head and v.is_floating_point()
             and not torch.equal(tuned.state_dict()[k], v)]
    assert len(moved) > len(old["state_dict"]) // 3  # the backbone trained on, not only the head


@trains
def test_same_class_set_keeps_every_weight(six_class_run):
    model, ckpt, message = init_from_checkpoint(six_class_run / "model.pt", load_checkpoint(six_class_run / "model.pt")[1]["classes"])
    assert "every weight kept" in message
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["state_dict"].items())


@trains
def test_mismatched_class_sets_are_clear_errors(six_class_run, seven_class_data, tmp_path, capsys):
    # evaluating a six-class model on recordings labelled with a seventh class
    rc = har_train(["evaluate", str(six_class_run / "model.pt"), "--data", str(seven_class_data)])
    err = capsys.readouterr().err
    assert rc == 2 and "label 'TRANSITION' is not in the class set" in err and "Traceback" not in err
    # training a class that has no windows
    with pytest.raises(ConfigError, match=r"class\(es\) \['RUNNING'\] have no training windows"):
        fit(quick(seven_class_data, classes=[*load_dataset(seven_class_data).classes, "RUNNING"]), tmp_path)
    with pytest.raises(ConfigError, match="must be two or more distinct class names"):
        quick(seven_class_data, classes=["WALKING", "WALKING"])


@trains
def test_resume_continues_where_the_run_stopped(hapt_user1_dir, tmp_path):
    config = quick(hapt_user1_dir, epochs=3, train_all=False, val_subjects=[], subjects=[],
                   rotate_degrees=10.0, intensity_scale=0.2)  # augmentation RNGs must resume too
    config = load_train_config(None, {**config.to_dict(), "train_all": True})
    reference = fit(config, tmp_path / "whole", say=lambda m: None)

    class Stop(KeyboardInterrupt):
        pass

    def interrupt(epoch):
        if epoch == 2:
            raise Stop
    with pytest.raises(Stop):
        fit(config, tmp_path / "cut", epoch_done=interrupt, say=lambda m: None)
    assert (tmp_path / "cut" / STATE_FILE).exists() and not (tmp_path / "cut" / "model.pt").exists()
    notes = []
    resumed = fit(config, tmp_path / "cut", resume=True, say=notes.append)
    assert notes == [f"resuming {tmp_path / 'cut'} after epoch 2 of 3"]
    assert [h["epoch"] for h in resumed["history"]] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed["history"]] == [h["train_loss"] for h in reference["history"]]
    a, _ = load_checkpoint(tmp_path / "whole" / "model.pt")
    b, _ = load_checkpoint(tmp_path / "cut" / "model.pt")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert not (tmp_path / "cut" / STATE_FILE).exists()
    with pytest.raises(Exception, match="training_state.pt does not exist \\(the run finished"):
        fit(config, tmp_path / "cut", resume=True)


@trains
def test_resume_refuses_other_settings(hapt_user1_dir, tmp_path):
    config = quick(hapt_user1_dir, epochs=2)
    with pytest.raises(KeyboardInterrupt):
        fit(config, tmp_path, epoch_done=lambda e: (_ for _ in ()).throw(KeyboardInterrupt), say=lambda m: None)
    with pytest.raises(ConfigError, match=r"started with other settings for \['lr'\]"):
        fit(load_train_config(None, {**config.to_dict(), "lr": 1e-3}), tmp_path, resume=True)


@trains
def test_evaluate_json_matches_a_hand_count(six_class_run, hapt_user1_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = har_train(["evaluate", str(six_class_run / "model.pt"), "--data", str(hapt_user1_dir), "--json", str(out),
                    "--confusion", str(tmp_path / "c.png")])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    # By hand: the same windows, the checkpoint's own mount alignment and statistics, argmax, count.
    from training.data import checkpoint_inputs

    model, ckpt = load_checkpoint(six_class_run / "model.pt")
    windows = load_dataset(hapt_user1_dir)
    with torch.no_grad():
        predicted = model(torch.from_numpy(checkpoint_inputs(windows, ckpt))).argmax(1).numpy()
    assert report["windows"] == len(windows)
    assert report["accuracy"] == pytest.approx(float((predicted == windows.y).mean()))
    for i, name in enumerate(ckpt["classes"]):
        mine = windows.y == i
        assert report["per_class"][name]["support"] == int(mine.sum())
        assert report["per_class"][name]["recall"] == pytest.approx(float((predicted[mine] == i).mean()))
    f1 = [report["per_class"][c]["f1"] for c in ckpt["classes"]]
    assert report["macro_f1"] == pytest.approx(float(np.mean(f1)))
    assert (tmp_path / "c.png").stat().st_size > 10_000
    assert "accuracy" in capsys.readouterr().out


def test_the_shipped_checkpoint_is_the_source_of_the_shipped_bundle():
    """edge/models/default/model.pt (placed with the final model) must be the checkpoint its bundle came from."""
    from edge.bundle import load_bundle, sha256_file

    from training.checkpoint import SHIPPED_CHECKPOINT

    if not SHIPPED_CHECKPOINT.exists():
        pytest.skip(f"{SHIPPED_CHECKPOINT} is not placed in this checkout yet (docs/training.md, 'Fine-tuning')")
    bundle = load_bundle(SHIPPED_CHECKPOINT.parent)
    assert sha256_file(SHIPPED_CHECKPOINT) == bundle.source_checkpoint["sha256"]
    _, ckpt = load_checkpoint(SHIPPED_CHECKPOINT)
    assert tuple(ckpt["classes"]) == bundle.classes and ckpt["model_name"] == bundle.source_checkpoint["model_name"]



@pytest.mark.parametrize("backend, precision", [("onnx", "int8"), ("tflite", "fp32")])
def test_evaluate_scores_a_bundle_like_its_session(hapt_user1_dir, tmp_path, backend, precision):
    """A bundle, any backend and precision: the report counts what the device's own session predicts."""
    from edge.bundle import load_bundle
    from edge.inference import create_session

    from training.data import normalize
    from training.evaluate import evaluate_model

    bundle_dir = Path(__file__).parent / "data" / "tiny_bundle"
    report = evaluate_model(bundle_dir, hapt_user1_dir, backend=backend, precision=precision)
    bundle = load_bundle(bundle_dir)
    windows = load_dataset(hapt_user1_dir, bundle.frontend_config, classes=bundle.classes)
    predicted = create_session(bundle, backend, precision).predict(normalize(windows.X, bundle.mean, bundle.std)).argmax(1)
    assert report["windows"] == len(windows) and f"{backend} {precision}" in report["model"]
    assert report["accuracy"] == pytest.approx(float((predicted == windows.y).mean()))
    assert np.array_equal(np.asarray(report["confusion"]).sum(1), np.bincount(windows.y, minlength=6))
