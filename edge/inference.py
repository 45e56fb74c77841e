"""Inference sessions over a bundle's model files: TFLite (LiteRT) or onnxruntime, fp32 or int8.

    session = create_session(bundle, backend="tflite", precision="int8", num_threads=1)
    logits = session.predict(windows)      # windows (k, 128, 9) float32 normalized -> (k, 6) float32
    logits, features = session.predict_with_features(windows)  # + (k, F) penultimate features (har-bundle/2)

The caller always speaks float: for a full-integer int8 model the session quantizes the input
and dequantizes the output with the scale / zero point of the bundle (checked against the file).
The TFLite runtime is `ai_edge_litert` (LiteRT, the current name of TensorFlow Lite) when it is
installed, else `tflite_runtime`. No torch here, ever: this runs on the Raspberry Pi.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.bundle import Bundle, BundleError, ModelEntry, TensorSpec, load_bundle

ONNX_CHUNK = 256  # windows per onnxruntime call for a dynamic-batch model


class InferenceError(ValueError):
    """A runtime that is not installed, or input the model cannot take; the message says what to do."""


def import_tflite_interpreter() -> tuple[Any, str]:
    """-> (Interpreter class, module name): ai_edge_litert first, tflite_runtime as the fallback."""
    try:
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime"
    except ImportError:
        pass
    raise InferenceError("no TFLite runtime is installed: `pip install ai-edge-litert` (or tflite-runtime with "
                         "numpy<2 on Python <= 3.11), or use the onnx backend (--backend onnx)")


def _import_onnxruntime() -> Any:  # the onnxruntime module (it ships no types)
    try:
        import onnxruntime
    except ImportError:
        raise InferenceError("onnxruntime is not installed: `pip install onnxruntime`, or use the tflite backend "
                             "(--backend tflite)") from None
    return onnxruntime


_AT_HWCAP = 16                # auxiliary vector key of the CPU capability bits
_HWCAP_ASIMDDP = 1 << 20      # arm64: SDOT/UDOT (Linux arch/arm64/include/uapi/asm/hwcap.h)


def _arm64_hwcap_dotprod() -> bool | None:
    """arm64: whether the kernel (or qemu-user, which emulates the auxiliary vector) reports SDOT/UDOT to
    this process; None when /proc/self/auxv cannot be read."""
    try:
        data = open("/proc/self/auxv", "rb").read()
    except OSError:
        return None
    words = memoryview(data).cast("Q")  # (key, value) pairs of unsigned 64-bit words
    for i in range(0, len(words) - 1, 2):
        if words[i] == _AT_HWCAP:
            return bool(words[i + 1] & _HWCAP_ASIMDDP)
    return None


def cpu_features() -> tuple[str, set[str]]:
    """(machine, the CPU's feature flags as the Linux kernel lists them; empty elsewhere). On arm64 the
    process's own capability bits decide `asimddp` (/proc/cpuinfo is the host's under qemu-user)."""
    machine = platform.machine().lower()
    flags: set[str] = set()
    if machine in ("aarch64", "arm64"):
        dotprod = _arm64_hwcap_dotprod()
        if dotprod is not None:
            return machine, {"asimd", "asimddp"} if dotprod else {"asimd"}
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    flags = set(value.split())
                    break
    except OSError:
        pass
    return machine, flags


def auto_precision(machine: str | None = None, flags: set[str] | None = None) -> tuple[str, str]:
    """-> (precision, why) for `--precision auto`: int8 where the CPU has int8 dot-product instructions
    (Arm's SDOT/UDOT, `asimddp`; x86's VNNI), fp32 elsewhere. Without them an int8 model runs on
    widening multiplies and is no faster than fp32 (measured: docs/results.md, "Lean runtime"), so
    fp32, the exact model, is the better choice there."""
    if machine is None or flags is None:
        machine, flags = cpu_features()
    if machine in ("aarch64", "arm64"):
        if "asimddp" in flags or (machine == "arm64" and not flags):  # Apple silicon: no /proc, always has dot product
            return "int8", f"{machine} with int8 dot-product instructions (asimddp)"
        return "fp32", f"{machine} without int8 dot-product instructions (no asimddp, e.g. Cortex-A72 / Pi 4)"
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni"})
    if vnni:
        return "int8", f"{machine} with VNNI ({', '.join(vnni)})"
    return "fp32", f"{machine} without VNNI int8 dot products"


_INT8_MIN, _INT8_MAX = np.float32(-128), np.float32(127)


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """float32 -> int8 with the tensor's scale and zero point (round half to even, like TFLite).
    In place on one float32 temporary: at batch 1 this runs per window, and numpy's temporaries cost
    more than the arithmetic."""
    q = np.divide(x, np.float32(spec.scale), dtype=np.float32)
    np.rint(q, out=q)
    q += np.float32(spec.zero_point)
    np.maximum(q, _INT8_MIN, out=q)        # (np.clip's Python wrapper costs as much as both of these)
    np.minimum(q, _INT8_MAX, out=q)
    q8: np.ndarray = q.astype(np.int8)
    return q8


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    y = q.astype(np.float32)
    y -= np.float32(spec.zero_point)
    y *= np.float32(spec.scale)
    return y


class _Session:
    precision_reason: str  # why this precision: set by create_session

    def __init__(self, bundle: Bundle, entry: ModelEntry, runtime: str):
        self.bundle = bundle
        self.entry = entry
        self.backend = entry.backend
        self.precision = entry.precision
        self.runtime = runtime
        self.path = bundle.model_path(entry)
        self.window = bundle.window
        self.n_channels = len(bundle.channels)
        self.n_classes = bundle.n_classes
        self.precision_reason = "as asked"  # create_session says why, for precision "auto"

    def describe(self) -> str:
        note = getattr(self, "delegate_note", "")
        return f"{self.path.name} ({self.backend} {self.precision} via {self.runtime}{', ' + note if note else ''})"

    def _mismatch(self, what: str, file_value: object, entry_value: object) -> BundleError:
        return BundleError(f"{self.path}: the model file does not match its bundle.json entry "
                           f"'{self.entry.key}': {what} is {file_value} in the file but {entry_value} in bundle.json; "
                           "re-export the bundle with `har-export`")

    def _check_windows(self, windows: np.ndarray) -> np.ndarray:
        x = np.asarray(windows)
        if x.ndim != 3 or x.shape[1:] != (self.window, self.n_channels):
            raise InferenceError(f"predict() takes windows of shape (k, {self.window}, {self.n_channels}); "
                                 f"got {x.shape}: stack normalized front-end windows along axis 0")
        if x.dtype.kind not in "fiu":  # (np.issubdtype costs more than the rest of this check)
            raise InferenceError(f"predict() takes numeric windows; got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        # One reduction instead of two: a finite sum means finite values (an overflowing sum is checked in full).
        if not math.isfinite(x.sum()) and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).any(axis=(1, 2)).sum())
            raise InferenceError(f"{bad} of {len(x)} windows hold NaN or inf values; fix or drop them "
                                 "before inference (the gap handler should have)")
        return x

    def _layout_in(self, x: np.ndarray) -> np.ndarray:   # x (k, T, C)
        return x.transpose(0, 2, 1) if self.entry.input.layout == "NCT" else x  # model layout

    def _run(self, x: np.ndarray) -> np.ndarray:  # x (k, ...) in the model's layout -> (k, n_classes)
        raise NotImplementedError

    def _run_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predict(self, windows: np.ndarray) -> np.ndarray:
        x = self._check_windows(windows)   # (k, T, C) float32
        if len(x) == 0:
            return np.zeros((0, self.n_classes), np.float32)
        return self._run(self._layout_in(x))  # (k, n_classes)

    def predict_with_features(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (logits (k, n_classes), features (k, F)) float32, from one run of the model."""
        features = self.entry.features
        if features is None:
            raise BundleError(f"{self.bundle.path}: this bundle ({self.bundle.schema_version}) has no features output, "
                              "which wearer enrolment needs; re-export it with `har-export CHECKPOINT --out DIR`")
        x = self._check_windows(windows)   # (k, T, C) float32
        if len(x) == 0:
            return np.zeros((0, self.n_classes), np.float32), np.zeros((0, features.shape[1]), np.float32)
        return self._run_with_features(self._layout_in(x))  # (k, n_classes), (k, F)


# What the TFLite runtime prints on every start (to the process's stderr, from C++): not the product's
# message, so it is kept off the user's screen; anything else it prints is passed on.
TFLITE_START_NOISE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _without_start_noise() -> Iterator[None]:
    """Capture file descriptor 2 (C++ writes bypass sys.stderr), then re-emit it minus TFLITE_START_NOISE."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded use): nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            rest = [line for line in captured.read().splitlines(keepends=True) if not line.startswith(TFLITE_START_NOISE)]
            if rest:
                os.write(2, b"".join(rest))


class TFLiteSession(_Session):
    def __init__(self, bundle: Bundle, entry: ModelEntry, num_threads: int = 1):
        Interpreter, runtime = import_tflite_interpreter()
        super().__init__(bundle, entry, runtime)
        self.delegate_note = ""
        try:
            with _without_start_noise():
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            # XNNPACK refuses some int8 graphs (seen on a random-init model); the builtin kernels
            # still run them correctly, only slower, so fall back rather than fail.
            self.delegate_note = f"XNNPACK refused the model ({str(e)[:120]}); builtin kernels"
            try:
                from importlib import import_module
                resolver = import_module(Interpreter.__module__).OpResolverType
                self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads,
                                               experimental_op_resolver_type=resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
                self.interpreter.allocate_tensors()
            except (ValueError, RuntimeError, AttributeError) as e2:
                raise BundleError(f"{self.path}: {runtime} cannot load this TFLite model ({e2}); re-export the "
                                  "bundle, or upgrade the runtime") from None
        self.input_detail = self.interpreter.get_input_details()[0]
        self.output_detail = self.interpreter.get_output_details()[0]
        self._features_index = None
        if entry.features is not None:  # outputs found by name: TFLite promises no output order
            by_name = {d["name"]: d for d in self.interpreter.get_output_details()}
            if entry.features.name not in by_name or entry.output.name not in by_name:
                raise self._mismatch("the output names", sorted(by_name), [entry.output.name, entry.features.name])
            self.output_detail = by_name[entry.output.name]
            self._check(by_name[entry.features.name], entry.features, "features")
            self._features_index = by_name[entry.features.name]["index"]
        self._check(self.input_detail, entry.input, "input")
        self._check(self.output_detail, entry.output, "output")
        self.batch = int(self.input_detail["shape"][0])
        self._input_index, self._output_index = self.input_detail["index"], self.output_detail["index"]

    def _check(self, detail: dict[str, Any], spec: TensorSpec, which: str) -> None:
        dtype = np.dtype(detail["dtype"]).name
        if dtype != spec.dtype:
            raise self._mismatch(f"the {which} dtype", dtype, spec.dtype)
        shape = tuple(int(d) for d in detail["shape"])
        if shape != spec.shape:
            raise self._mismatch(f"the {which} shape", list(shape), list(spec.shape))
        if spec.quantized:
            scale, zero_point = detail["quantization"]
            if spec.scale is None or not np.isclose(scale, spec.scale, rtol=1e-6, atol=0) \
                    or zero_point != spec.zero_point:
                raise self._mismatch(f"the {which} quantization (scale, zero point)", (scale, zero_point),
                                     (spec.scale, spec.zero_point))

    def _run(self, x: np.ndarray) -> np.ndarray:  # x (k, ...) in the model's layout
        spec_in = self.entry.input
        feed = quantize(x, spec_in) if spec_in.quantized else x
        b = self.batch                      # the file's static batch (1 from onnx2tf)
        if len(x) == b:                     # the live path: one window per call, no slicing or copying
            return self._invoke(feed)
        if len(x) % b:
            raise InferenceError(f"{self.path.name} takes batches of {b} windows; got {len(x)}")
        out = np.empty((len(x), self.n_classes), np.float32)
        for i in range(0, len(x), b):
            out[i:i + b] = self._invoke(feed[i:i + b])
        return out

    def _invoke(self, feed: np.ndarray) -> np.ndarray:  # feed (b, ...) -> float32 logits (b, n_classes)
        self.interpreter.set_tensor(self._input_index, feed)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self._output_index)  # (b, n_classes)
        return dequantize(y, self.entry.output) if self.entry.output.quantized else y

    def _run_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # x (k, ...) model layout
        spec_in, spec_features = self.entry.input, self.entry.features
        assert spec_features is not None  # predict_with_features checked
        feed = quantize(x, spec_in) if spec_in.quantized else x
        b = self.batch
        if len(x) % b:
            raise InferenceError(f"{self.path.name} takes batches of {b} windows; got {len(x)}")
        logits = np.empty((len(x), self.n_classes), np.float32)
        features = np.empty((len(x), spec_features.shape[1]), np.float32)
        for i in range(0, len(x), b):
            logits[i:i + b] = self._invoke(feed[i:i + b])
            f = self.interpreter.get_tensor(self._features_index)  # (b, F)
            features[i:i + b] = dequantize(f, spec_features) if spec_features.quantized else f
        return logits, features


class OnnxSession(_Session):
    ORT_DTYPES = {"tensor(float)": "float32", "tensor(int8)": "int8"}

    def __init__(self, bundle: Bundle, entry: ModelEntry, num_threads: int = 1):
        ort = _import_onnxruntime()
        super().__init__(bundle, entry, f"onnxruntime {ort.__version__}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options,
                                                providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own exception types per failure
            raise BundleError(f"{self.path}: onnxruntime cannot load this model ({str(e)[:300]}); "
                              "re-export the bundle, or upgrade onnxruntime") from None
        self.input_meta = self.session.get_inputs()[0]
        self.output_meta = self.session.get_outputs()[0]
        self._check(self.input_meta, entry.input, "input")
        self._check(self.output_meta, entry.output, "output")
        if entry.features is not None:
            outputs = self.session.get_outputs()
            if len(outputs) != 2:
                raise self._mismatch("the number of outputs", len(outputs), 2)
            self._check(outputs[1], entry.features, "features")
        first = self.input_meta.shape[0]
        self.batch = first if isinstance(first, int) and first > 0 else None  # None: dynamic

    def _check(self, meta: Any, spec: TensorSpec, which: str) -> None:  # meta: an onnxruntime NodeArg
        if meta.name != spec.name:
            raise self._mismatch(f"the {which} name", meta.name, spec.name)
        dtype = self.ORT_DTYPES.get(meta.type, meta.type)
        if dtype != spec.dtype:
            raise self._mismatch(f"the {which} dtype", dtype, spec.dtype)
        shape = [d if isinstance(d, int) and d > 0 else -1 for d in meta.shape]
        if shape != list(spec.shape):
            raise self._mismatch(f"the {which} shape", shape, list(spec.shape))

    def _run(self, x: np.ndarray) -> np.ndarray:  # x (k, ...) in the model's layout
        spec_in, spec_out = self.entry.input, self.entry.output
        feed = quantize(x, spec_in) if spec_in.quantized else x
        step = self.batch or ONNX_CHUNK
        if self.batch and len(x) % self.batch:
            raise InferenceError(f"{self.path.name} takes batches of {self.batch} windows; got {len(x)}")
        parts = []
        for i in range(0, len(x), step):
            y = self.session.run([self.output_meta.name], {self.input_meta.name: feed[i:i + step]})[0]
            parts.append(dequantize(y, spec_out) if spec_out.quantized else y.astype(np.float32))
        return np.concatenate(parts)       # (k, n_classes)

    def _run_with_features(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # x (k, ...) model layout
        spec_in, spec_out, spec_features = self.entry.input, self.entry.output, self.entry.features
        assert spec_features is not None  # predict_with_features checked
        feed = quantize(x, spec_in) if spec_in.quantized else x
        step = self.batch or ONNX_CHUNK
        if self.batch and len(x) % self.batch:
            raise InferenceError(f"{self.path.name} takes batches of {self.batch} windows; got {len(x)}")
        logits, features = [], []
        for i in range(0, len(x), step):
            y, f = self.session.run([spec_out.name, spec_features.name], {self.input_meta.name: feed[i:i + step]})
            logits.append(dequantize(y, spec_out) if spec_out.quantized else y.astype(np.float32))
            features.append(dequantize(f, spec_features) if spec_features.quantized else f.astype(np.float32))
        return np.concatenate(logits), np.concatenate(features)  # (k, n_classes), (k, F)


def create_session(bundle: Bundle | str | Path, backend: str = "tflite", precision: str = "int8",
                   num_threads: int = 1) -> TFLiteSession | OnnxSession:
    """An inference session on the bundle's `backend`/`precision` model (a Bundle or a bundle directory).
    precision "auto": `auto_precision()`'s pick for this CPU; the session's `precision_reason` says why."""
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle)
    if backend not in ("tflite", "onnx"):
        raise InferenceError(f"backend {backend!r} is not supported; choose 'tflite' or 'onnx'")
    if precision not in ("int8", "fp32", "auto"):
        raise InferenceError(f"precision {precision!r} is not supported; choose 'auto', 'int8' or 'fp32'")
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise InferenceError(f"num_threads must be a positive integer, got {num_threads!r}")
    why = ""
    if precision == "auto":
        precision, why = auto_precision()
        if f"{backend}-{precision}" not in bundle.models:  # the bundle lacks it: the other one
            other = "fp32" if precision == "int8" else "int8"
            precision, why = other, f"{why}, but the bundle has no {backend} {precision} model"
    entry = bundle.model(backend, precision)
    cls = TFLiteSession if backend == "tflite" else OnnxSession
    session = cls(bundle, entry, num_threads=num_threads)
    session.precision_reason = f"auto: {why}" if why else "as asked"
    return session
