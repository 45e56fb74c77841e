"""Bundle validation (edge.bundle): a good bundle loads; every kind of bad bundle is refused with a
message naming the file. Uses the stored tiny bundle (tests/data/tiny_bundle, written by an earlier `har-export`
from a tcn_tiny checkpoint: har-bundle/1, without the features output, which must keep loading) and the shipped
bundle (har-bundle/2); needs neither torch nor tensorflow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edge.bundle import SCHEMA_VERSION, BundleError, load_bundle, sha256_file
from edge.frontend import CHANNELS, FrontEndConfig
from edge.inference import create_session

from helpers import SHIPPED_BUNDLE, TINY_BUNDLE


@pytest.fixture
def bundle_dir(tmp_path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(TINY_BUNDLE, target)
    return target


def _edit_json(bundle_dir: Path, edit) -> None:
    path = bundle_dir / "bundle.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def test_stored_bundle_loads_with_every_field(bundle_dir):
    bundle = load_bundle(bundle_dir)
    assert bundle.schema_version == "har-bundle/1" != SCHEMA_VERSION  # an old bundle still loads ...
    assert bundle.n_features is None and all(e.features is None for e in bundle.models.values())
    with pytest.raises(BundleError, match="has no features output"):  # ... and says what enrolment needs
        create_session(bundle, "onnx", "fp32").predict_with_features(np.zeros((1, 128, 9), np.float32))
    assert bundle.classes == ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
    assert bundle.channels == CHANNELS
    assert bundle.channel_units == ("g",) * 3 + ("rad/s",) * 3 + ("g",) * 3
    assert (bundle.sample_rate_hz, bundle.window, bundle.hop) == (50.0, 128, 64)
    assert bundle.mean.shape == (9,) and bundle.std.shape == (9,) and (bundle.std > 0).all()
    assert isinstance(bundle.frontend_config, FrontEndConfig)
    assert sorted(bundle.models) == ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]
    int8 = bundle.model("tflite", "int8")
    assert int8.input.dtype == "int8" and int8.input.shape == (1, 128, 9) and int8.input.layout == "NTC"
    assert int8.input.scale > 0 and -128 <= int8.input.zero_point <= 127
    assert bundle.model("onnx", "fp32").input.shape == (-1, 128, 9)
    for name, info in bundle.files.items():
        assert sha256_file(bundle_dir / name) == info["sha256"]
    assert set(bundle.metrics["formats"]) == {"torch-fp32", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"}


def test_loads_from_bundle_json_path_too(bundle_dir):
    assert load_bundle(bundle_dir / "bundle.json").path == bundle_dir


def test_tampered_model_file_is_named(bundle_dir):
    path = bundle_dir / "model.int8.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF           # one flipped byte, same size
    path.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"model\.int8\.tflite: sha256 .* does not match"):
        load_bundle(bundle_dir)


def test_truncated_file_is_named(bundle_dir):
    path = bundle_dir / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BundleError, match=r"model\.fp32\.onnx: .* bytes but bundle\.json says"):
        load_bundle(bundle_dir)


def test_missing_file_is_named(bundle_dir):
    (bundle_dir / "model.fp32.tflite").unlink()
    with pytest.raises(BundleError, match=r"model\.fp32\.tflite: file listed in .* is missing"):
        load_bundle(bundle_dir)


def test_missing_bundle_json_and_directory(bundle_dir, tmp_path):
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nowhere")
    (bundle_dir / "bundle.json").unlink()
    with pytest.raises(BundleError, match=r"bundle\.json is missing"):
        load_bundle(bundle_dir)


def test_malformed_json_names_line(bundle_dir):
    path = bundle_dir / "bundle.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(BundleError, match=r"bundle\.json: not valid JSON \(line \d+"):
        load_bundle(bundle_dir)


def test_wrong_schema_version(bundle_dir):
    _edit_json(bundle_dir, lambda d: d.update(schema_version="har-bundle/99"))
    with pytest.raises(BundleError,
                       match=r"schema_version 'har-bundle/99' is not one this runtime reads \(har-bundle/1, har-bundle/2\)"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["models"]["tflite-int8"]["input"].update(shape=[1, 64, 9]), r"models\.tflite-int8\.input\.shape"),
    (lambda d: d["models"]["onnx-fp32"]["output"].update(shape=[-1, 5]), r"models\.onnx-fp32\.output\.shape"),
    (lambda d: d["models"]["tflite-int8"]["input"].update(dtype="uint16"), r"input\.dtype' is 'uint16'"),
    (lambda d: d["models"]["tflite-int8"]["output"].update(quantization=None), r"output\.quantization' is required"),
    (lambda d: d["models"]["tflite-int8"]["input"]["quantization"].update(scale=-1.0), r"quantization\.scale"),
    (lambda d: d["models"]["tflite-int8"]["input"]["quantization"].update(zero_point=300), r"zero_point"),
    (lambda d: d["models"]["onnx-fp32"]["input"].update(layout="CHW"), r"layout' is 'CHW'"),
    (lambda d: d["normalization"].update(std=[1.0] * 8), r"normalization\.std' must be 9 numbers"),
    (lambda d: d["normalization"].update(std=[0.0] * 9), r"normalization\.std' must be positive"),
    (lambda d: d.update(classes=[]), r"'classes' must be a non-empty list"),
    (lambda d: d.update(window=100), r"'frontend' disagrees"),
    (lambda d: d["frontend"].update(bogus=1), r"'frontend' is not a valid front-end configuration"),
    (lambda d: d["models"]["onnx-int8"].update(file="model.int8.tflite"), r"not a \.onnx file"),
    (lambda d: d["models"]["onnx-int8"].update(file="other.onnx"), r"no sha256 entry"),
    (lambda d: d["files"].update({"../escape": d["files"]["model.fp32.onnx"]}), r"not a plain file name"),
    (lambda d: d.pop("source_checkpoint"), r"'source_checkpoint' is missing"),
])
def test_bad_json_fields_are_refused(bundle_dir, edit, message):
    _edit_json(bundle_dir, edit)
    with pytest.raises(BundleError, match=message) as info:
        load_bundle(bundle_dir)
    assert "bundle.json" in str(info.value) and "har-export" in str(info.value)


def test_swapped_model_file_is_caught_by_hash(bundle_dir):
    # a different model file under the right name: its hash no longer matches the entry
    shutil.copy(bundle_dir / "model.fp32.tflite", bundle_dir / "model.int8.tflite")
    with pytest.raises(BundleError, match=r"model\.int8\.tflite"):
        load_bundle(bundle_dir)


def test_model_file_not_matching_its_entry_is_refused_at_session(bundle_dir):
    """The JSON is self-consistent (hashes re-signed) but describes the file wrongly: the session sees it."""
    pytest.importorskip("ai_edge_litert", reason="needs a TFLite runtime")
    from edge.inference import create_session

    shutil.copy(bundle_dir / "model.fp32.tflite", bundle_dir / "model.int8.tflite")

    def resign(d):
        d["files"]["model.int8.tflite"] = {"sha256": sha256_file(bundle_dir / "model.int8.tflite"),
                                           "bytes": (bundle_dir / "model.int8.tflite").stat().st_size}
    _edit_json(bundle_dir, resign)
    bundle = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match=r"model\.int8\.tflite: the model file does not match .* input dtype is "
                                          r"float32 in the file but int8"):
        create_session(bundle, backend="tflite", precision="int8")


def test_quantization_mismatch_is_refused_at_session(bundle_dir):
    pytest.importorskip("ai_edge_litert", reason="needs a TFLite runtime")
    from edge.inference import create_session

    _edit_json(bundle_dir, lambda d: d["models"]["tflite-int8"]["input"]["quantization"].update(
        scale=d["models"]["tflite-int8"]["input"]["quantization"]["scale"] * 2))
    with pytest.raises(BundleError, match=r"input quantization"):
        create_session(load_bundle(bundle_dir), backend="tflite", precision="int8")


def test_not_a_tflite_file(bundle_dir):
    path = bundle_dir / "model.fp32.tflite"
    path.write_bytes(b"\x00" * 64)

    def resign(d):
        d["files"]["model.fp32.tflite"] = {"sha256": sha256_file(path), "bytes": 64}
    _edit_json(bundle_dir, resign)
    with pytest.raises(BundleError, match=r"model\.fp32\.tflite: not a TFLite flatbuffer"):
        load_bundle(bundle_dir)


def test_unknown_model_choice_lists_available(bundle_dir):
    bundle = load_bundle(bundle_dir)
    _edit = bundle.models.pop("onnx-int8")
    assert _edit.file == "model.int8.onnx"
    with pytest.raises(BundleError, match=r"no int8 onnx model .* it has \['onnx-fp32', 'tflite-fp32', 'tflite-int8'\]"):
        bundle.model("onnx", "int8")
    assert np.isclose(bundle.mean, np.asarray(json.loads((bundle_dir / "bundle.json").read_text())
                                              ["normalization"]["mean"], np.float32)).all()


@pytest.fixture
def shipped_dir(tmp_path) -> Path:
    target = tmp_path / "shipped"
    shutil.copytree(SHIPPED_BUNDLE, target)
    return target


def test_shipped_bundle_has_the_features_output_in_every_format(shipped_dir):
    bundle = load_bundle(shipped_dir)
    assert bundle.schema_version == SCHEMA_VERSION == "har-bundle/2"
    assert bundle.n_features is not None and bundle.n_features != bundle.n_classes
    for key, entry in bundle.models.items():
        assert entry.features.shape[1] == bundle.n_features and entry.features.shape[0] == entry.input.shape[0], key
        assert entry.features.dtype == ("int8" if key == "tflite-int8" else "float32"), key
    assert len(bundle.model_id) == 64 and bundle.model_id == load_bundle(shipped_dir).model_id


def test_model_id_names_the_model_files_not_the_metrics(shipped_dir):
    before = load_bundle(shipped_dir).model_id
    _edit_json(shipped_dir, lambda d: d["export"].update(note="re-described"))
    assert load_bundle(shipped_dir).model_id == before


def test_a_v2_bundle_without_features_is_refused(shipped_dir):
    _edit_json(shipped_dir, lambda d: d["models"]["onnx-fp32"].pop("features"))
    with pytest.raises(BundleError, match=r"models\.onnx-fp32\.features' must be an object"):
        load_bundle(shipped_dir)


def test_features_of_different_widths_are_refused(shipped_dir):
    _edit_json(shipped_dir, lambda d: d["models"]["onnx-fp32"]["features"].update(shape=[-1, 3]))
    with pytest.raises(BundleError, match="features outputs of different widths"):
        load_bundle(shipped_dir)


def test_features_output_agrees_across_engines(shipped_dir):
    """The features the device computes: ONNX and TFLite fp32 agree, int8 within its quantization."""
    windows = np.load(Path(__file__).parent / "data" / "parity_windows.npz")["windows"]  # (48, 128, 9) normalized
    bundle = load_bundle(shipped_dir)
    out = {key: create_session(bundle, *key.split("-")).predict_with_features(windows) for key in bundle.models}
    reference_logits, reference = out["onnx-fp32"]
    span = reference.max() - reference.min()
    assert span > 0.1                                          # real features, not zeros
    np.testing.assert_allclose(out["tflite-fp32"][1], reference, atol=1e-4)
    for key in ("onnx-int8", "tflite-int8"):
        assert np.abs(out[key][1] - reference).max() <= 0.15 * span, key
    for key, (logits, _) in out.items():  # the logits of predict_with_features are predict's
        np.testing.assert_allclose(logits, create_session(bundle, *key.split("-")).predict(windows), atol=1e-6)
