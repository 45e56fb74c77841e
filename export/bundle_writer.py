"""Write bundle.json for a directory of exported model files (the format is docs/BUNDLE.md).

Every tensor description is read back from the written model files themselves (shape, dtype,
quantization scale / zero point), never assumed, and the finished bundle is validated with the
edge runtime's own loader before the export reports success.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from edge.bundle import BUNDLE_JSON, SCHEMA_VERSION, load_bundle, sha256_file
from edge.frontend import FilterDesign, FrontEndConfig

# bundle key -> file name: the four formats of a bundle
MODEL_FILES = {
    "onnx-fp32": "model.fp32.onnx",
    "onnx-int8": "model.int8.onnx",
    "tflite-fp32": "model.fp32.tflite",
    "tflite-int8": "model.int8.tflite",
}
METRICS_JSON = "metrics.json"


def _quantization(dtype: str, scale: float, zero_point: int) -> dict | None:
    return {"scale": float(scale), "zero_point": int(zero_point)} if dtype == "int8" else None


def _outputs_by_role(specs: list[dict], path, n_classes: int) -> tuple[dict, dict | None]:
    """(logits, features) among a file's outputs: logits is the (batch, n_classes) one. TFLite names its
    outputs after the graph (StatefulPartitionedCall:0, :1, in no promised order), so shape decides; the
    features width must therefore differ from n_classes."""
    if len(specs) == 1:
        return specs[0], None
    logits = [s for s in specs if s["shape"][-1] == n_classes]
    features = [s for s in specs if s["shape"][-1] != n_classes]
    if len(specs) != 2 or len(logits) != 1 or len(features) != 1:
        raise ValueError(f"{path}: outputs {[s['shape'] for s in specs]} are not one (batch, {n_classes}) logits "
                         "and one (batch, F) features tensor with F != the number of classes; re-export it")
    return logits[0], features[0]


def tflite_tensor_specs(path: str | Path, n_classes: int, layout: str = "NTC") -> tuple[dict, dict, dict | None]:
    """-> (input, logits, features or None) as bundle.json describes them, read from the file."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    specs = []
    for detail in (interpreter.get_input_details()[0], *interpreter.get_output_details()):
        dtype = np.dtype(detail["dtype"]).name
        scale, zero_point = detail["quantization"]
        specs.append({"name": detail["name"], "dtype": dtype, "shape": [int(d) for d in detail["shape"]],
                      "quantization": _quantization(dtype, scale, zero_point)})
    specs[0]["layout"] = layout
    return (specs[0], *_outputs_by_role(specs[1:], path, n_classes))


def onnx_tensor_specs(path: str | Path, n_classes: int, layout: str = "NTC") -> tuple[dict, dict, dict | None]:
    """-> (input, logits, features or None) as bundle.json describes them, read from the file."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dtypes = {"tensor(float)": "float32", "tensor(int8)": "int8"}
    specs = []
    for meta in (session.get_inputs()[0], *session.get_outputs()):
        specs.append({"name": meta.name, "dtype": dtypes.get(meta.type, meta.type),
                      "shape": [d if isinstance(d, int) and d > 0 else -1 for d in meta.shape],
                      "quantization": None})  # QDQ: float in, float out
    specs[0]["layout"] = layout
    return (specs[0], *_outputs_by_role(specs[1:], path, n_classes))


def file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def write_bundle(out_dir: str | Path, *, classes, channels, channel_units, mean, std, frontend: dict,
                 source_checkpoint: dict, export_info: dict, metrics: dict | None = None, mount: dict | None = None,
                 training_data: dict | None = None, model_files: dict[str, str] = MODEL_FILES):
    """Describe the model files in `out_dir` in bundle.json (plus metrics.json when given) -> Bundle."""
    out = Path(out_dir)
    models, files = {}, {}
    for key, name in model_files.items():
        backend, precision = key.split("-")
        path = out / name
        spec_in, spec_out, spec_features = (tflite_tensor_specs if backend == "tflite" else onnx_tensor_specs)(
            path, len(classes))
        models[key] = {"file": name, "backend": backend, "precision": precision, "input": spec_in,
                       "output": spec_out, "features": spec_features}
        files[name] = file_entry(path)
    if metrics is not None:
        (out / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n")
        files[METRICS_JSON] = file_entry(out / METRICS_JSON)
    data = {
        "schema_version": SCHEMA_VERSION,
        "classes": list(classes),
        "channels": list(channels),
        "channel_units": list(channel_units),
        "sample_rate_hz": float(frontend["sample_rate_hz"]),
        "window": int(frontend["window"]),
        "hop": int(frontend["hop"]),
        "normalization": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "frontend": dict(frontend),
        # Designed here so that the device runs the filters without importing scipy.signal (edge/frontend.py).
        "frontend_filters": FilterDesign.design(FrontEndConfig.from_dict(dict(frontend))).to_dict(),
        "mount": dict(mount) if mount else None,
        "models": models,
        "files": files,
        "source_checkpoint": source_checkpoint,
        "training_data": training_data,  # {"kind", "notice"}: the terms that come with the training data
        "export": export_info,
        "metrics": metrics or {},
    }
    tmp = out / (BUNDLE_JSON + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, out / BUNDLE_JSON)     # never leave a half-written bundle.json
    return load_bundle(out)                # the edge loader's checks are the export's last step
