"""ONNX (static batch 1) -> TFLite fp32 and full-integer int8.

Path: onnx2tf turns the ONNX graph into a TensorFlow SavedModel (keeping the model's own input
layout (1, 128, 9): without `keep_shape_absolutely_input_names` it would treat the 128 axis as
channels and transpose); TensorFlow's own TFLiteConverter then writes the fp32 file and, with a
representative dataset of real windows, the full-integer int8 file (int8 input and output).
Both files are checked to run under ai_edge_litert with builtin ops only (no Flex, no BN).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path

import numpy as np

from export import ExportError

FORBIDDEN_OP_PARTS = ("BATCH_NORM", "FLEX", "CUSTOM")


def onnx_to_saved_model(onnx_path: str | Path, saved_model_dir: str | Path) -> Path:
    import onnx
    import onnx2tf

    input_name = onnx.load(str(onnx_path)).graph.input[0].name
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            onnx2tf.convert(input_onnx_file_path=str(onnx_path), output_folder_path=str(saved_model_dir),
                            keep_shape_absolutely_input_names=[input_name], output_signaturedefs=True,
                            non_verbose=True)
    except Exception as e:  # onnx2tf raises many kinds; keep its log for the reader
        raise ExportError(f"onnx2tf could not convert {onnx_path}: {e}\n{log.getvalue()[-3000:]}") from e
    if not (Path(saved_model_dir) / "saved_model.pb").exists():
        raise ExportError(f"onnx2tf wrote no SavedModel for {onnx_path}:\n{log.getvalue()[-3000:]}")
    return Path(saved_model_dir)


def _convert(saved_model_dir: Path, calibration: np.ndarray | None) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    if calibration is not None:
        windows = np.ascontiguousarray(calibration, dtype=np.float32)  # (n, 128, 9)

        def representative_dataset():
            for i in range(len(windows)):
                yield [windows[i:i + 1]]    # (1, 128, 9)

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    else:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    try:
        return converter.convert()
    except Exception as e:
        kind = "int8" if calibration is not None else "fp32"
        raise ExportError(f"TFLiteConverter ({kind}) failed on {saved_model_dir}: {e}") from e


def tflite_op_names(path: str | Path) -> set[str]:
    """Builtin op names of a .tflite file, listed without delegates (XNNPACK would hide them)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(path),
                              experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return {op["op_name"] for op in interpreter._get_ops_details()}


def check_tflite_ops(path: str | Path) -> set[str]:
    ops = tflite_op_names(path)
    bad = sorted(op for op in ops if any(part in op.upper() for part in FORBIDDEN_OP_PARTS))
    if bad:
        raise ExportError(f"{path}: ops {bad} would not run on a plain LiteRT interpreter (or BN was not folded)")
    return ops


def export_tflite(onnx_batch1_path: str | Path, fp32_path: str | Path, int8_path: str | Path,
                  calibration: np.ndarray, work_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write the fp32 and full-integer int8 .tflite files from a static batch-1 ONNX model."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        saved_model = onnx_to_saved_model(onnx_batch1_path, Path(tmp) / "saved_model")
        Path(fp32_path).write_bytes(_convert(saved_model, None))
        Path(int8_path).write_bytes(_convert(saved_model, calibration))
    check_tflite_ops(fp32_path)
    check_tflite_ops(int8_path)
    return Path(fp32_path), Path(int8_path)
