"""Torch -> ONNX (fp32, opset 20, one self-contained file), checked with onnx.checker."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch
import torch.nn as nn

from export import ExportError

OPSET = 20  # 20 keeps GELU one native op (18 decomposes it into Erf, see shared/docs/toolchain.md)
INPUT_NAME = "window"
OUTPUT_NAME = "logits"
FEATURES_NAME = "features"  # the penultimate features (export/features.py), the second output


def export_onnx(module: nn.Module, path: str | Path, window: int = 128, n_channels: int = 9,
                dynamic_batch: bool = True) -> Path:
    """Write `module` (eval, folded; returning (logits, features), export.features.LogitsAndFeatures) as ONNX
    with input (batch, window, n_channels) float32 and outputs logits (batch, n_classes), features (batch, F).

    dynamic_batch=True: batch dimension symbolic (replay throughput); False: static batch 1
    (what onnx2tf needs for the TFLite path).
    """
    import onnx

    path = Path(path)
    module = module.eval()
    batch = 2 if dynamic_batch else 1       # torch.export specialises a size-1 dim to a constant
    example = torch.zeros(batch, window, n_channels)  # (B, 128, 9)
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            program = torch.onnx.export(module, (example,), dynamo=True, opset_version=OPSET,
                                        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME, FEATURES_NAME],
                                        dynamic_shapes=dynamic_shapes, external_data=False)
            if program is None:  # only the legacy (dynamo=False) exporter returns nothing
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(path), external_data=False)
    except Exception as e:  # the exporter raises many types; say which step failed and show its log
        raise ExportError(f"torch.onnx.export failed for {path.name}: {e}\n{log.getvalue()[-2000:]}") from e
    model = onnx.load(str(path))
    # The exporter annotates every node with stack traces and local paths: 3x the file size, and
    # the file would differ per machine. Drop them so the same checkpoint gives the same bytes.
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    onnx.save(model, str(path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ExportError(f"{path}: onnx.checker rejects the exported graph: {e}") from e
    ops = {n.op_type for n in model.graph.node}
    if "BatchNormalization" in ops:
        raise ExportError(f"{path}: a BatchNormalization node is left in the graph; fold BN before export")
    return path
