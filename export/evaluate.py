"""The per-format table: accuracy, agreement, logit error, size and latency of every format.

ONNX and TFLite are run through `edge.inference` (the code the device runs), torch fp32 is the
reference. Latency: batch 1, one thread, median and 99th percentile over `runs` calls.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from edge.inference import create_session

from training.metrics import classification_report

FORMATS = ("torch-fp32", "onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8")


def latency_ms(predict, window: np.ndarray, runs: int = 200, warmup: int = 20) -> tuple[float, float]:
    """-> (median, p99) milliseconds of predict(window (1,128,9))."""
    for _ in range(warmup):
        predict(window)
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter()
        predict(window)
        times[i] = time.perf_counter() - t0
    return float(np.median(times) * 1e3), float(np.percentile(times, 99) * 1e3)


@torch.no_grad()
def torch_outputs(model, windows: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """model: export.features.LogitsAndFeatures -> (logits (k, n_classes), features (k, F)) float32."""
    model.eval()
    parts = [model(torch.from_numpy(windows[i:i + batch])) for i in range(0, len(windows), batch)]
    return (np.concatenate([p[0].numpy() for p in parts]).astype(np.float32),
            np.concatenate([p[1].numpy() for p in parts]).astype(np.float32))


def evaluate_formats(torch_model, bundle, windows: np.ndarray, labels: np.ndarray, runs: int = 200,
                     file_sizes: dict[str, int] | None = None) -> dict[str, dict]:
    """Rows keyed by format; windows (k,128,9) normalized held-out windows, labels (k,); torch_model returns
    (logits, features) (export.features.LogitsAndFeatures): both outputs are compared with it."""
    windows = np.ascontiguousarray(windows, dtype=np.float32)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference, reference_features = torch_outputs(torch_model, windows)
        with torch.no_grad():
            torch_predict = lambda w: torch_model(torch.from_numpy(w))  # noqa: E731
            torch_latency = latency_ms(torch_predict, windows[:1], runs)
    finally:
        torch.set_num_threads(threads)
    outputs = {"torch-fp32": (reference, reference_features, torch_latency, None)}
    runtimes = {"torch-fp32": f"torch {torch.__version__}"}
    for key in FORMATS[1:]:
        backend, precision = key.split("-")
        session = create_session(bundle, backend=backend, precision=precision, num_threads=1)
        logits, features = session.predict_with_features(windows)
        outputs[key] = (logits, features, latency_ms(session.predict, windows[:1], runs),
                        bundle.model_path(session.entry).stat().st_size)
        runtimes[key] = session.describe()  # says when XNNPACK refused a model (slow builtin kernels)
    rows = {}
    feature_span = float(reference_features.max() - reference_features.min())
    for key, (logits, features, (median, p99), size) in outputs.items():
        report = classification_report(labels, logits.argmax(1), bundle.classes)
        diff = np.abs(logits - reference)
        rows[key] = {
            "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
            "top1_agreement": float((logits.argmax(1) == reference.argmax(1)).mean()),
            "max_abs_logit_diff": float(diff.max()), "mean_abs_logit_diff": float(diff.mean()),
            "max_abs_features_diff": float(np.abs(features - reference_features).max()),
            "features_span": feature_span,
            "file_bytes": size, "latency_ms_median": median, "latency_ms_p99": p99,
            "n_windows": int(len(windows)), "runtime": runtimes[key],
        }
    return rows


def format_table(rows: dict[str, dict]) -> str:
    head = (f"{'format':<12} {'acc %':>7} {'mF1 %':>7} {'agree %':>8} {'max|dl|':>8} {'mean|dl|':>9} "
            f"{'size KB':>8} {'med ms':>7} {'p99 ms':>7}")
    lines = [head, "-" * len(head)]
    for key, r in rows.items():
        size = "-" if r["file_bytes"] is None else f"{r['file_bytes'] / 1024:.1f}"
        lines.append(f"{key:<12} {100 * r['accuracy']:>7.2f} {100 * r['macro_f1']:>7.2f} "
                     f"{100 * r['top1_agreement']:>8.2f} {r['max_abs_logit_diff']:>8.4f} "
                     f"{r['mean_abs_logit_diff']:>9.5f} {size:>8} {r['latency_ms_median']:>7.3f} "
                     f"{r['latency_ms_p99']:>7.3f}")
    return "\n".join(lines)


def check_targets(rows: dict[str, dict], max_accuracy_drop: float = 0.005, min_agreement: float = 0.99) -> list[str]:
    """Human-readable misses of the int8 targets (empty when every int8 format meets them)."""
    misses = []
    for backend in ("onnx", "tflite"):
        fp32, int8 = rows[f"{backend}-fp32"], rows[f"{backend}-int8"]
        drop = fp32["accuracy"] - int8["accuracy"]
        if drop > max_accuracy_drop:
            misses.append(f"{backend}-int8 accuracy is {100 * drop:.2f} points below fp32 (target <= {100 * max_accuracy_drop:.1f})")
        if int8["top1_agreement"] < min_agreement:
            misses.append(f"{backend}-int8 top-1 agreement with torch is {100 * int8['top1_agreement']:.2f}% (target >= {100 * min_agreement:.0f}%)")
    return misses
