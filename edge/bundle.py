"""Loading and validating a model bundle (the contract is docs/BUNDLE.md).

A bundle is a directory written by `har-export`: model files plus `bundle.json`, which describes
everything the device needs (classes, channels, sample rate, window/hop, normalization, front-end
parameters, each model file's tensors and quantization) and the sha256 of every file.
`load_bundle` checks all of it before anything runs: a bundle that loads is internally consistent,
and any problem raises `BundleError` naming the file and saying what to do.

numpy and the standard library only (no torch, no runtime): the runtimes are opened by
`edge.inference.create_session`, which also checks each model file against its entry.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge.frontend import FilterDesign, FrontEndConfig, FrontEndError
from edge.mount import MountConfig, MountError
from edge.posture import SITTING, STANDING, PostureConfig, PostureError

SCHEMA_VERSION = "har-bundle/2"  # what har-export writes: /2 added each model's `features` output
READABLE_VERSIONS = ("har-bundle/1", SCHEMA_VERSION)  # a /1 bundle still runs; it cannot be enrolled on
BUNDLE_JSON = "bundle.json"
BACKENDS = ("tflite", "onnx")
PRECISIONS = ("int8", "fp32")
DTYPES = ("float32", "int8")
LAYOUTS = ("NTC", "NCT")  # NTC: (batch, time, channel) = the model's own (k, 128, 9)
MODEL_SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
REEXPORT = "re-export it with `har-export CHECKPOINT --out DIR`"


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and says what to do."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as bundle.json describes it."""

    name: str
    dtype: str                      # "float32" | "int8"
    shape: tuple[int, ...]          # -1 marks a dynamic (batch) dimension
    layout: str | None = None       # inputs only: "NTC" | "NCT"
    scale: float | None = None      # int8 only: real = (q - zero_point) * scale
    zero_point: int | None = None

    @property
    def quantized(self) -> bool:
        return self.dtype == "int8"


@dataclass(frozen=True)
class ModelEntry:
    key: str                        # "<backend>-<precision>", e.g. "tflite-int8"
    file: str
    backend: str
    precision: str
    input: TensorSpec
    output: TensorSpec
    features: TensorSpec | None = None  # (batch, F) penultimate features; None in a har-bundle/1 bundle


@dataclass
class Bundle:
    path: Path
    schema_version: str
    classes: tuple[str, ...]
    channels: tuple[str, ...]
    channel_units: tuple[str, ...]
    sample_rate_hz: float
    window: int
    hop: int
    mean: np.ndarray                # (n_channels,) float32
    std: np.ndarray                 # (n_channels,) float32, > 0
    frontend: dict[str, Any]
    frontend_config: FrontEndConfig
    models: dict[str, ModelEntry]
    files: dict[str, dict[str, Any]]
    source_checkpoint: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)
    mount: MountConfig | None = None   # windows are mount-aligned before normalization (edge/mount.py)
    frontend_filters: FilterDesign | None = None  # the front-end's filter coefficients (None: design with scipy)
    posture: PostureConfig | None = None  # the session-relative sitting / standing rule (edge/posture.py)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def model(self, backend: str, precision: str) -> ModelEntry:
        key = f"{backend}-{precision}"
        if key not in self.models:
            raise BundleError(f"{self.path / BUNDLE_JSON}: no {precision} {backend} model in this bundle; "
                              f"it has {sorted(self.models)}: choose one of those")
        return self.models[key]

    def model_path(self, entry: ModelEntry) -> Path:
        return self.path / entry.file

    @property
    def n_features(self) -> int | None:
        """Width F of the features output (the same in every format), None when the bundle has none."""
        widths = {e.features.shape[1] for e in self.models.values() if e.features is not None}
        return widths.pop() if len(widths) == 1 else None

    @property
    def model_id(self) -> str:
        """sha256 of the model files' own sha256s (sorted by name): names these weights whatever bundle.json's
        metrics say, so a wearer profile fitted on it (edge/enroll.py) can tell it from any other model."""
        lines = "".join(f"{self.models[k].file}:{self.files[self.models[k].file]['sha256']}\n"
                        for k in sorted(self.models))
        return hashlib.sha256(lines.encode()).hexdigest()


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# Field checks: each names bundle.json and the key path in its message.


class _Reader:
    def __init__(self, json_path: Path):
        self.json_path = json_path

    def fail(self, where: str, problem: str) -> BundleError:
        return BundleError(f"{self.json_path}: '{where}' {problem}; {REEXPORT}")

    def get(self, obj: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...],
            optional: bool = False) -> Any:  # the JSON value, checked to be of `kind`
        path = f"{where}.{key}" if where else key
        if key not in obj:
            if optional:
                return None
            raise self.fail(path, "is missing")
        value = obj[key]
        if optional and value is None:
            return None
        ok = isinstance(value, kind) and not (kind in (int, (int, float)) and isinstance(value, bool))
        if not ok:
            names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.fail(path, f"must be {names}, found {type(value).__name__} {value!r:.60}")
        return value

    def str_list(self, obj: dict[str, Any], key: str, where: str = "") -> tuple[str, ...]:
        values = self.get(obj, key, where, list)
        if not values or not all(isinstance(v, str) and v for v in values):
            raise self.fail(f"{where}.{key}" if where else key, "must be a non-empty list of names")
        if len(set(values)) != len(values):
            raise self.fail(f"{where}.{key}" if where else key, "has duplicate names")
        return tuple(values)

    def float_vector(self, obj: dict[str, Any], key: str, where: str, length: int) -> np.ndarray:
        path = f"{where}.{key}"
        values = self.get(obj, key, where, list)
        if len(values) != length or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise self.fail(path, f"must be {length} numbers (one per channel), found {values!r:.80}")
        array = np.asarray(values, dtype=np.float64)
        if not np.isfinite(array).all():
            raise self.fail(path, "has non-finite values")
        return array.astype(np.float32)


def _tensor_spec(r: _Reader, obj: object, where: str, is_input: bool) -> TensorSpec:
    if not isinstance(obj, dict):
        raise r.fail(where, "must be an object with name, dtype, shape")
    name = r.get(obj, "name", where, str)
    dtype = r.get(obj, "dtype", where, str)
    if dtype not in DTYPES:
        raise r.fail(f"{where}.dtype", f"is {dtype!r}; supported: {list(DTYPES)}")
    shape = r.get(obj, "shape", where, list)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1) for d in shape):
        raise r.fail(f"{where}.shape", f"must be a list of positive sizes (-1 = dynamic), found {shape!r}")
    layout = None
    if is_input:
        layout = r.get(obj, "layout", where, str)
        if layout not in LAYOUTS:
            raise r.fail(f"{where}.layout", f"is {layout!r}; supported: {list(LAYOUTS)}")
    quant = r.get(obj, "quantization", where, dict, optional=True)
    scale = zero_point = None
    if dtype == "int8":
        if quant is None:
            raise r.fail(f"{where}.quantization", "is required for an int8 tensor (scale and zero_point)")
        scale = r.get(quant, "scale", f"{where}.quantization", (int, float))
        zero_point = r.get(quant, "zero_point", f"{where}.quantization", int)
        if not (math.isfinite(scale) and scale > 0):
            raise r.fail(f"{where}.quantization.scale", f"must be a positive number, found {scale!r}")
        if not -128 <= zero_point <= 127:
            raise r.fail(f"{where}.quantization.zero_point", f"must lie in [-128, 127] for int8, found {zero_point}")
    elif quant is not None:
        raise r.fail(f"{where}.quantization", f"must be null for a {dtype} tensor")
    return TensorSpec(name, dtype, tuple(shape), layout, None if scale is None else float(scale), zero_point)


def _check_shapes(r: _Reader, key: str, spec_in: TensorSpec, spec_out: TensorSpec, window: int,
                  n_channels: int, n_classes: int) -> None:
    expected = (window, n_channels) if spec_in.layout == "NTC" else (n_channels, window)
    if len(spec_in.shape) != 3 or spec_in.shape[1:] != expected:
        raise r.fail(f"models.{key}.input.shape",
                     f"is {list(spec_in.shape)} but window={window} and {n_channels} channels in layout "
                     f"{spec_in.layout} need [batch, {expected[0]}, {expected[1]}]")
    if len(spec_out.shape) != 2 or spec_out.shape[1] != n_classes:
        raise r.fail(f"models.{key}.output.shape", f"is {list(spec_out.shape)} but the bundle has {n_classes} classes")
    if spec_in.shape[0] != spec_out.shape[0]:
        raise r.fail(f"models.{key}", f"input batch {spec_in.shape[0]} and output batch {spec_out.shape[0]} differ")


def _check_files(r: _Reader, root: Path, files: object) -> dict[str, dict[str, Any]]:
    if not isinstance(files, dict) or not files:
        raise r.fail("files", "must map every file of the bundle to its sha256")
    for name, info in files.items():
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or name == BUNDLE_JSON:
            raise r.fail(f"files.{name}", "is not a plain file name inside the bundle directory")
        if not isinstance(info, dict):
            raise r.fail(f"files.{name}", "must be an object with sha256 and bytes")
        digest = r.get(info, "sha256", f"files.{name}", str)
        size = r.get(info, "bytes", f"files.{name}", int)
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise r.fail(f"files.{name}.sha256", "must be 64 lowercase hex digits")
        path = root / name
        if not path.is_file():
            raise BundleError(f"{path}: file listed in {r.json_path} is missing; copy the whole bundle "
                              f"directory again or {REEXPORT}")
        actual_size = path.stat().st_size
        if actual_size != size:
            raise BundleError(f"{path}: {actual_size} bytes but bundle.json says {size}: the file was changed "
                              f"or truncated; copy the bundle again or {REEXPORT}")
        actual = sha256_file(path)
        if actual != digest:
            raise BundleError(f"{path}: sha256 {actual[:16]}... does not match bundle.json ({digest[:16]}...): "
                              f"the file was changed or corrupted; copy the bundle again or {REEXPORT}")
    return files


def _model_entry(r: _Reader, root: Path, key: str, obj: object, files: dict[str, Any], version: str) -> ModelEntry:
    where = f"models.{key}"
    if not isinstance(obj, dict):
        raise r.fail(where, "must be an object")
    backend = r.get(obj, "backend", where, str)
    precision = r.get(obj, "precision", where, str)
    if backend not in BACKENDS:
        raise r.fail(f"{where}.backend", f"is {backend!r}; supported: {list(BACKENDS)}")
    if precision not in PRECISIONS:
        raise r.fail(f"{where}.precision", f"is {precision!r}; supported: {list(PRECISIONS)}")
    if key != f"{backend}-{precision}":
        raise r.fail(where, f"must be named '{backend}-{precision}' after its backend and precision")
    file = r.get(obj, "file", where, str)
    if file not in files:
        raise r.fail(f"{where}.file", f"names {file!r}, which has no sha256 entry in 'files'")
    if not file.endswith(MODEL_SUFFIX[backend]):
        raise r.fail(f"{where}.file", f"names {file!r}, not a {MODEL_SUFFIX[backend]} file for backend {backend}")
    if backend == "tflite":
        with open(root / file, "rb") as f:
            header = f.read(8)
        if header[4:8] != b"TFL3":
            raise BundleError(f"{root / file}: not a TFLite flatbuffer (no 'TFL3' identifier); {REEXPORT}")
    spec_in = _tensor_spec(r, obj.get("input"), f"{where}.input", is_input=True)
    spec_out = _tensor_spec(r, obj.get("output"), f"{where}.output", is_input=False)
    if precision == "fp32" and (spec_in.dtype, spec_out.dtype) != ("float32", "float32"):
        raise r.fail(where, "is fp32 but its input/output dtypes are not float32")
    spec_features = None
    if version != "har-bundle/1":
        spec_features = _tensor_spec(r, obj.get("features"), f"{where}.features", is_input=False)
        if precision == "fp32" and spec_features.dtype != "float32":
            raise r.fail(f"{where}.features", "is in an fp32 model but its dtype is not float32")
        if len(spec_features.shape) != 2 or spec_features.shape[0] != spec_in.shape[0]:
            raise r.fail(f"{where}.features.shape", f"is {list(spec_features.shape)}; it must be [batch, F] with the "
                                                    f"input's batch {spec_in.shape[0]}")
        if spec_features.name == spec_out.name:
            raise r.fail(f"{where}.features.name", "is the logits output's name; the two outputs must differ")
    return ModelEntry(key, file, backend, precision, spec_in, spec_out, spec_features)


def parse_bundle(root: str | Path, data: dict[str, Any]) -> Bundle:
    root = Path(root)
    r = _Reader(root / BUNDLE_JSON)
    if not isinstance(data, dict):
        raise BundleError(f"{r.json_path}: must hold one JSON object; {REEXPORT}")
    version = data.get("schema_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(f"{r.json_path}: schema_version {version!r} is not one this runtime reads "
                          f"({', '.join(READABLE_VERSIONS)}); {REEXPORT} with the same version of this project")
    classes = r.str_list(data, "classes")
    channels = r.str_list(data, "channels")
    units = r.get(data, "channel_units", "", list)
    if len(units) != len(channels) or not all(isinstance(u, str) for u in units):
        raise r.fail("channel_units", f"must give one unit per channel ({len(channels)})")
    rate = float(r.get(data, "sample_rate_hz", "", (int, float)))
    window = r.get(data, "window", "", int)
    hop = r.get(data, "hop", "", int)
    if not (rate > 0 and window >= 1 and 1 <= hop <= window):
        raise r.fail("sample_rate_hz/window/hop", f"must satisfy rate > 0 and 1 <= hop <= window, found {rate}, {window}, {hop}")
    norm = r.get(data, "normalization", "", dict)
    mean = r.float_vector(norm, "mean", "normalization", len(channels))
    std = r.float_vector(norm, "std", "normalization", len(channels))
    if not (std > 0).all():
        raise r.fail("normalization.std", "must be positive for every channel")
    frontend = r.get(data, "frontend", "", dict)
    try:
        frontend_config = FrontEndConfig.from_dict(frontend)
    except (FrontEndError, TypeError) as e:
        raise r.fail("frontend", f"is not a valid front-end configuration ({e})") from None
    if (frontend_config.window, frontend_config.hop, frontend_config.sample_rate_hz) != (window, hop, rate):
        raise r.fail("frontend", "disagrees with the bundle's window / hop / sample_rate_hz")
    filters_obj = r.get(data, "frontend_filters", "", dict, optional=True)
    try:
        filters = FilterDesign.from_dict(filters_obj, frontend_config) if filters_obj else None
    except FrontEndError as e:
        raise r.fail("frontend_filters", f"do not describe the front-end's filters ({e})") from None
    files = _check_files(r, root, data.get("files"))
    models_obj = r.get(data, "models", "", dict)
    if not models_obj:
        raise r.fail("models", "lists no model")
    models = {}
    for key, obj in models_obj.items():
        entry = _model_entry(r, root, key, obj, files, version)
        _check_shapes(r, key, entry.input, entry.output, window, len(channels), len(classes))
        models[key] = entry
    widths = {e.features.shape[1] for e in models.values() if e.features is not None}
    if len(widths) > 1:
        raise r.fail("models", f"features outputs of different widths {sorted(widths)}: all formats are one model")
    source = r.get(data, "source_checkpoint", "", dict)
    metrics = r.get(data, "metrics", "", dict, optional=True) or {}
    mount_obj = r.get(data, "mount", "", dict, optional=True)
    try:
        mount = MountConfig.from_dict(mount_obj, str(r.json_path) + ": mount") if mount_obj else None
    except MountError as e:
        raise BundleError(f"{e}; {REEXPORT}") from None
    posture_obj = r.get(data, "posture", "", dict, optional=True)
    try:
        posture = PostureConfig.from_dict(posture_obj, str(r.json_path) + ": posture") if posture_obj else None
    except PostureError as e:
        raise BundleError(f"{e}; {REEXPORT}") from None
    if posture is not None and not {SITTING, STANDING} <= set(classes):
        raise r.fail("posture", f"a posture rule needs the classes {SITTING} and {STANDING}; {REEXPORT}")
    return Bundle(root, version, classes, channels, tuple(units), rate, window, hop, mean, std, dict(frontend),
                  frontend_config, models, files, source, metrics, data, mount, filters, posture)


def load_bundle(path: str | Path) -> Bundle:
    """Read and validate a bundle directory (or its bundle.json) -> Bundle; raises BundleError."""
    root = Path(path)
    if root.name == BUNDLE_JSON and root.is_file():
        root = root.parent
    if not root.exists():
        raise BundleError(f"bundle directory {root} does not exist; pass a directory written by `har-export`")
    if not root.is_dir():
        raise BundleError(f"{root} is not a directory; a bundle is a directory with {BUNDLE_JSON} and model files")
    json_path = root / BUNDLE_JSON
    if not json_path.is_file():
        raise BundleError(f"{json_path} is missing: {root} is not a bundle; {REEXPORT}")
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise BundleError(f"{json_path}: not valid JSON (line {e.lineno}, column {e.colno}: {e.msg}); "
                          f"{REEXPORT}") from None
    except UnicodeDecodeError:
        raise BundleError(f"{json_path}: not UTF-8 text; {REEXPORT}") from None
    return parse_bundle(root, data)
