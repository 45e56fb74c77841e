"""edge.inference on the stored tiny bundle and the stored real windows: every backend/precision runs,
formats agree within stated tolerances, int8 (de)quantization is right, bad input is refused clearly.
No torch, no tensorflow: this is what the Raspberry Pi runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from edge.bundle import load_bundle
from edge.inference import InferenceError, create_session, dequantize, quantize

from helpers import REPO, TINY_BUNDLE

DATA = REPO / "tests" / "data"


# Tolerances on the 48 stored windows (8 per class, real HAPT windows)
FP32_ATOL = 1e-4            # ONNX fp32 vs TFLite fp32: the same float graph
INT8_MIN_AGREEMENT = 0.95   # int8 vs fp32 top-1 agreement (measured 1.0 on the stored windows)
INT8_MAX_LOGIT_DIFF = 1.5   # int8 vs fp32 max abs logit difference (measured 0.46 onnx, 0.87 tflite; logits span 10)

pytest.importorskip("onnxruntime", reason="the edge extra installs onnxruntime")
pytest.importorskip("ai_edge_litert", reason="the edge extra installs ai-edge-litert")


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(TINY_BUNDLE)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    stored = np.load(DATA / "parity_windows.npz")
    return stored["windows"]               # (48, 128, 9) normalized real windows


@pytest.fixture(scope="module")
def logits(bundle, windows) -> dict[str, np.ndarray]:
    out = {}
    for key in ("onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"):
        backend, precision = key.split("-")
        out[key] = create_session(bundle, backend=backend, precision=precision).predict(windows)
    return out


def test_every_format_gives_float_logits(logits, windows):
    for key, value in logits.items():
        assert value.shape == (len(windows), 6) and value.dtype == np.float32, key
        assert np.isfinite(value).all(), key
        assert value.std() > 0.1, f"{key} gives constant logits"


def test_onnx_and_tflite_fp32_agree(logits):
    assert np.abs(logits["onnx-fp32"] - logits["tflite-fp32"]).max() <= FP32_ATOL


@pytest.mark.parametrize("backend", ["onnx", "tflite"])
def test_int8_close_to_fp32(logits, backend):
    fp32, int8 = logits[f"{backend}-fp32"], logits[f"{backend}-int8"]
    agreement = (fp32.argmax(1) == int8.argmax(1)).mean()
    assert agreement >= INT8_MIN_AGREEMENT
    assert np.abs(fp32 - int8).max() <= INT8_MAX_LOGIT_DIFF


def test_batch_and_single_window_give_the_same_logits(bundle, windows):
    for backend in ("onnx", "tflite"):
        session = create_session(bundle, backend=backend, precision="int8")
        batch = session.predict(windows[:5])
        single = np.concatenate([session.predict(windows[i:i + 1]) for i in range(5)])
        np.testing.assert_array_equal(batch, single)


def test_int8_quantization_round_trip(bundle):
    spec = bundle.model("tflite", "int8").input
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    q = quantize(x, spec)
    assert q.dtype == np.int8
    inside = (x > (-128 - spec.zero_point) * spec.scale) & (x < (127 - spec.zero_point) * spec.scale)
    assert np.abs(dequantize(q, spec)[inside] - x[inside]).max() <= spec.scale / 2 + 1e-7
    assert quantize(np.array([1e6, -1e6], np.float32), spec).tolist() == [127, -128]  # saturates


def test_session_from_a_directory_path(windows):
    session = create_session(str(TINY_BUNDLE), backend="onnx", precision="fp32", num_threads=2)
    assert session.predict(windows[:2]).shape == (2, 6)
    assert "model.fp32.onnx" in session.describe()


def test_empty_batch(bundle):
    assert create_session(bundle, "tflite", "fp32").predict(np.zeros((0, 128, 9), np.float32)).shape == (0, 6)


@pytest.mark.parametrize("bad, message", [
    (np.zeros((128, 9), np.float32), r"shape \(k, 128, 9\); got \(128, 9\)"),
    (np.zeros((2, 9, 128), np.float32), r"got \(2, 9, 128\)"),
    (np.full((1, 128, 9), np.nan, np.float32), r"1 of 1 windows hold NaN"),
    (np.array([[["a"] * 9] * 128]), r"numeric windows"),
])
def test_bad_windows_are_refused(bundle, bad, message):
    session = create_session(bundle, "tflite", "int8")
    with pytest.raises(InferenceError, match=message):
        session.predict(bad)


def test_bad_arguments(bundle):
    with pytest.raises(InferenceError, match="backend 'torch' is not supported"):
        create_session(bundle, backend="torch")
    with pytest.raises(InferenceError, match="precision 'fp16'"):
        create_session(bundle, precision="fp16")
    with pytest.raises(InferenceError, match="num_threads"):
        create_session(bundle, num_threads=0)


def test_missing_runtimes_give_install_hints(bundle, monkeypatch):
    for name in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, name, None)   # makes `import name` raise ImportError
    with pytest.raises(InferenceError, match="pip install ai-edge-litert"):
        create_session(bundle, backend="tflite")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(InferenceError, match="pip install onnxruntime"):
        create_session(bundle, backend="onnx")


def test_edge_inference_never_imports_torch():
    code = ("import sys, numpy as np; from edge.inference import create_session; "
            f"s = create_session({str(TINY_BUNDLE)!r}, 'tflite', 'int8'); s.predict(np.zeros((1, 128, 9), np.float32)); "
            f"s = create_session({str(TINY_BUNDLE)!r}, 'onnx', 'int8'); s.predict(np.zeros((1, 128, 9), np.float32)); "
            "assert 'torch' not in sys.modules and 'tensorflow' not in sys.modules, 'heavy import'")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
