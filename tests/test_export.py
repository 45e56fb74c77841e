"""Export: BN folding (walker + parity), and one end-to-end `run_export` of a tiny model whose bundle is
checked at every boundary (torch unfused -> fused -> ONNX -> TFLite, fp32 -> int8) on the stored real
windows. Needs the export extra (torch, onnx, tensorflow, onnx2tf); skips cleanly without it."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

# Looked up, not imported: importing tensorflow (onnx2tf's) costs seconds at every collection, also of
# `make test-fast`, which deselects this module; the export imports it when it runs.
MISSING = [name for name in ("torch", "onnx", "onnxruntime", "tensorflow", "onnx2tf", "ai_edge_litert")
           if importlib.util.find_spec(name) is None]
if MISSING:
    pytest.skip(f"needs the export extra ({', '.join(MISSING)} not installed)", allow_module_level=True)

import torch  # noqa: E402

from edge.bundle import load_bundle, sha256_file  # noqa: E402
from edge.frontend import CHANNELS, FrontEndConfig  # noqa: E402
from edge.frontend import CLASSES as CLASS_NAMES  # noqa: E402
from edge.inference import create_session  # noqa: E402

from training.checkpoint import make_checkpoint, save_checkpoint  # noqa: E402
from training.models import create_model  # noqa: E402

from export import ExportError  # noqa: E402
from export.fuse import FUSION_ATOL, check_fusion, count_batchnorms, fuse_model  # noqa: E402

pytestmark = pytest.mark.slow  # exports real models (seconds each): `make test-fast` leaves these out

DATA = Path(__file__).parent / "data"
FP32_ATOL = 1e-4        # torch fused vs ONNX fp32 / TFLite fp32
MOUNT = {"canonical": [0.979, -0.185, -0.086], "moving_rms_g": 0.2, "max_turn_deg": 10.0, "min_windows": 20}
INT8_REL_TOL = 0.15     # int8 max |logit diff| <= 15% of the fp32 logit span (random-init tiny model)


@pytest.fixture(scope="module")
def stored():
    data = np.load(DATA / "parity_windows.npz")
    return {k: data[k] for k in data.files}


def _randomize_batchnorm_statistics(model, seed=0):
    """Freshly built BNs are identities (mean 0, var 1): give them real-looking statistics so folding matters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


@torch.no_grad()
def _logits(model, windows):
    return model.eval()(torch.from_numpy(windows)).numpy()


@pytest.mark.parametrize("name, overrides, folded, affine", [
    ("tcn_physics_h32", {}, 11, 0),
    ("tcn_physics_h32", {"pre_norm": True}, 11, 3),   # the 3 pre-norm BNs become per-channel affines
    ("bilm", {}, 3, 0),
])
def test_fuse_walker_folds_every_batchnorm(stored, name, overrides, folded, affine):
    torch.manual_seed(0)
    model = create_model(name, **overrides).eval()
    _randomize_batchnorm_statistics(model)
    path = model.classifier_module().eval()
    fused, report = fuse_model(path)
    assert count_batchnorms(fused) == 0
    assert report["folded_into_conv"] == folded and report["as_channel_affine"] == affine
    assert count_batchnorms(path) == folded + affine            # the source model is untouched
    diff = check_fusion(path, fused, stored["windows"])
    assert diff <= FUSION_ATOL
    assert np.abs(_logits(path, stored["windows"])).max() > 10 * FUSION_ATOL  # a real comparison


def test_check_fusion_catches_a_wrong_fold(stored):
    torch.manual_seed(0)
    model = create_model("tcn_tiny").eval()
    _randomize_batchnorm_statistics(model)
    path = model.classifier_module()
    fused, _ = fuse_model(path)
    with torch.no_grad():
        fused.large_kernel_conv.depthwise.bias += 0.05           # what a wrong fuse() would do
    with pytest.raises(ExportError, match="BatchNorm folding changed the logits"):
        check_fusion(path, fused, stored["windows"])


# --------------------------------------------------------------------------------------------------
# End to end: checkpoint -> har-export pipeline -> bundle, once for the module.


@pytest.fixture(scope="module")
def exported(tmp_path_factory, stored):
    from export.cli import run_export

    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = create_model("tcn_tiny").eval()
    _randomize_batchnorm_statistics(model)
    ckpt = make_checkpoint(model, model_name="tcn_tiny", train_config={}, classes=CLASS_NAMES, channels=CHANNELS,
                           mean=stored["mean"], std=stored["std"], frontend=FrontEndConfig().to_dict(),
                           metrics={}, train_subjects=[1, 3], val_subjects=[5], mount=MOUNT)
    ckpt_path = save_checkpoint(root / "model.pt", ckpt)
    windows = stored["windows"]
    result = run_export(ckpt_path, root / "bundle", runs=3,
                        windows=(windows, windows, stored["labels"], "stored parity windows"))
    reference_fused, _ = fuse_model(model.classifier_module())
    return {"result": result, "dir": root / "bundle", "ckpt_path": ckpt_path, "ckpt": ckpt, "model": model,
            "fused": reference_fused}


def test_bundle_carries_the_checkpoints_mount_alignment(exported):
    from edge.mount import MountConfig

    bundle = load_bundle(exported["dir"])
    assert bundle.mount == MountConfig.from_dict(MOUNT)  # the runtime aligns windows as training did
    assert json.loads((exported["dir"] / "bundle.json").read_text())["mount"]["min_windows"] == 20


def test_bundle_has_every_file_and_loads(exported):
    files = sorted(p.name for p in exported["dir"].iterdir())
    assert files == ["bundle.json", "metrics.json", "model.fp32.onnx", "model.fp32.tflite",
                     "model.int8.onnx", "model.int8.tflite"]
    bundle = load_bundle(exported["dir"])
    ckpt = exported["ckpt"]
    assert bundle.source_checkpoint["sha256"] == sha256_file(exported["ckpt_path"])
    np.testing.assert_allclose(bundle.mean, ckpt["norm"]["mean"], rtol=1e-6)
    np.testing.assert_allclose(bundle.std, ckpt["norm"]["std"], rtol=1e-6)
    assert bundle.frontend_config == FrontEndConfig(**ckpt["frontend"])
    assert bundle.raw["export"]["fusion"]["max_abs_logit_diff"] <= FUSION_ATOL


def test_no_batchnorm_in_any_exported_graph(exported):
    import onnx

    from export.tflite_export import tflite_op_names

    for name in ("model.fp32.onnx", "model.int8.onnx"):
        model = onnx.load(str(exported["dir"] / name))
        onnx.checker.check_model(model)
        ops = {n.op_type for n in model.graph.node}
        assert "BatchNormalization" not in ops and "Conv" in ops, name
        assert model.opset_import[0].version >= 20
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(exported["dir"] / "model.int8.onnx")).graph.node}
    for name in ("model.fp32.tflite", "model.int8.tflite"):
        ops = tflite_op_names(exported["dir"] / name)
        assert "CONV_2D" in ops or "DEPTHWISE_CONV_2D" in ops, name
        assert not any("BATCH" in op or "FLEX" in op.upper() for op in ops), (name, ops)


def test_parity_at_every_boundary(exported, stored):
    windows = stored["windows"]
    unfused = _logits(exported["model"].classifier_module(), windows)
    fused = _logits(exported["fused"], windows)
    assert np.abs(unfused - fused).max() <= FUSION_ATOL
    bundle = load_bundle(exported["dir"])
    out = {key: create_session(bundle, *key.split("-")).predict(windows) for key in bundle.models}
    for key in ("onnx-fp32", "tflite-fp32"):
        assert np.abs(out[key] - fused).max() <= FP32_ATOL, key
    span = fused.max() - fused.min()
    for key in ("onnx-int8", "tflite-int8"):
        diff = np.abs(out[key] - fused)
        assert diff.max() <= INT8_REL_TOL * span, (key, diff.max(), span)
        # top-1 must agree wherever fp32's margin between its two best classes exceeds the int8 error
        top2 = np.sort(fused, axis=1)[:, -2:]
        clear = (top2[:, 1] - top2[:, 0]) > 2 * diff.max()
        assert (out[key].argmax(1) == fused.argmax(1))[clear].all(), key


def test_features_output_matches_torch_in_every_format(exported, stored):
    from export.features import LogitsAndFeatures, check_features

    windows = stored["windows"]
    wrapped = LogitsAndFeatures(exported["fused"], len(CLASS_NAMES))
    assert check_features(exported["fused"], wrapped, windows) <= FUSION_ATOL  # same logits as the plain path
    with torch.no_grad():
        _, reference = wrapped(torch.from_numpy(windows))
    reference = reference.numpy()  # (48, 16): the input of tcn_tiny's head
    assert reference.shape == (len(windows), 16)
    bundle = load_bundle(exported["dir"])
    assert bundle.schema_version == "har-bundle/2" and bundle.n_features == 16
    span = reference.max() - reference.min()
    for key in bundle.models:
        logits, features = create_session(bundle, *key.split("-")).predict_with_features(windows)
        tolerance = FP32_ATOL if key.endswith("fp32") else INT8_REL_TOL * span
        assert np.abs(features - reference).max() <= tolerance, key
        row = exported["result"]["rows"][key]
        assert row["max_abs_features_diff"] == pytest.approx(float(np.abs(features - reference).max()), abs=1e-5)


def test_a_path_not_ending_in_its_head_is_refused(stored):
    from export.features import LogitsAndFeatures, check_features

    class Shifted(torch.nn.Module):  # the last Linear is not the last step: its input is not the features
        def __init__(self):
            super().__init__()
            self.body = create_model("tcn_tiny").classifier_module().eval()

        def forward(self, x):
            return self.body(x) * 2.0

    model = Shifted().eval()
    with pytest.raises(ExportError, match="not the classification path's last step"):
        check_features(model, LogitsAndFeatures(model, len(CLASS_NAMES)), stored["windows"])
    whole = create_model("tcn_tiny").eval()  # its physics head (C/2 -> 6) is registered after the classifier's
    with pytest.raises(ExportError, match="not the path's last step"):
        check_features(whole, LogitsAndFeatures(whole, len(CLASS_NAMES)), stored["windows"])


def test_metrics_table_written(exported):
    rows = exported["result"]["rows"]
    assert list(rows) == ["torch-fp32", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]
    stored_metrics = json.loads((exported["dir"] / "metrics.json").read_text())
    assert stored_metrics["formats"] == json.loads(json.dumps(rows))
    assert load_bundle(exported["dir"]).metrics["formats"].keys() == rows.keys()
    assert rows["torch-fp32"]["top1_agreement"] == 1.0 and rows["torch-fp32"]["max_abs_logit_diff"] == 0.0
    for key, row in rows.items():
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["macro_f1"] <= 1.0
        assert 0 < row["latency_ms_median"] <= row["latency_ms_p99"]
        assert row["n_windows"] == 48
        if key != "torch-fp32":
            assert row["file_bytes"] == (exported["dir"] / load_bundle(exported["dir"]).models[key].file).stat().st_size
    assert "format" in exported["result"]["table"] and "tflite-int8" in exported["result"]["table"]


def test_cli_errors_are_messages_not_tracebacks(exported, tmp_path, capsys):
    from export.cli import main

    assert main([str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "har-export: error:" in err and "missing.pt does not exist" in err and "Traceback" not in err
    assert main([str(exported["ckpt_path"]), "--out", str(exported["dir"])]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main([str(exported["ckpt_path"]), "--out", str(tmp_path / "c"), "--data", str(tmp_path / "no.zip")]) == 2
    assert "pass the data set the checkpoint was trained on with --data" in capsys.readouterr().err
    (tmp_path / "afile").write_text("x")
    assert main([str(exported["ckpt_path"]), "--out", str(tmp_path / "afile"), "--force"]) == 2
    assert "--out " + str(tmp_path / "afile") + " is a file; give a folder" in capsys.readouterr().err


def test_a_failed_forced_export_leaves_the_old_bundle_whole(exported, tmp_path, capsys):
    # --force used to delete the old bundle first: any later failure (here the data; a Ctrl-C during the
    # TensorFlow import did the same) left a folder with neither the old bundle nor a new one.
    from edge.bundle import load_bundle

    from export.cli import main

    old = tmp_path / "bundle"
    shutil.copytree(exported["dir"], old)
    before = {f.name: f.read_bytes() for f in old.iterdir()}
    assert main([str(exported["ckpt_path"]), "--out", str(old), "--force", "--data", str(tmp_path / "no.zip")]) == 2
    assert "pass the data set" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in old.iterdir()} == before and load_bundle(old).classes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging folder left behind
