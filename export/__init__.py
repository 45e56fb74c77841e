"""Export: a training checkpoint -> BN-folded ONNX / TFLite (fp32 and int8) models in a bundle.

`har-export CHECKPOINT --out DIR` (export.cli) runs the whole pipeline; docs/BUNDLE.md is the
contract of what it writes. Heavy imports (torch, onnx, tensorflow, onnx2tf) happen inside the
submodules, never here, so `import export` stays cheap.
"""


class ExportError(RuntimeError):
    """An export step that cannot go on; the message names the thing and says what to do."""
