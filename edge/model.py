"""What the pipeline needs of a model, and how a bundle becomes one.

    load_model(bundle_dir, backend, precision) -> Model: the bundle's classes, normalization statistics,
    front-end (config and filter coefficients) and mount config, and an inference `Session` for it.

The pipeline (edge/pipeline.py) calls nothing but the `Session` protocol, so an exported bundle's TFLite or
ONNX session (edge/inference.py) and a test's stand-in are used the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.frontend import FilterDesign, FrontEndConfig
from edge.mount import MountConfig
from edge.paths import DEFAULT_BUNDLE
from edge.posture import PostureConfig

if TYPE_CHECKING:
    from edge.bundle import Bundle


class EdgeError(ValueError):
    """A runtime problem the user can fix (bad option, unusable model); the CLI prints it."""


class Session(Protocol):
    """An inference session over normalized windows, like `sinks.Sink` for the outputs: edge.inference's
    TFLite and ONNX sessions, or a test's stand-in."""

    def predict(self, windows: np.ndarray) -> np.ndarray:
        """windows (k, 128, 9) float32 normalized -> logits (k, C)."""
        ...


class FeatureSession(Session, Protocol):
    """A session of a bundle with the features output (har-bundle/2): what a wearer profile needs."""

    def predict_with_features(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """windows (k, 128, 9) -> logits (k, C), penultimate features (k, F), from one run of the model."""
        ...


@dataclass
class Model:
    """What the pipeline needs from a bundle: classes, statistics, front-end, a session."""

    classes: tuple[str, ...]
    mean: np.ndarray  # (9,) float32, per-channel mean of the training windows
    std: np.ndarray  # (9,) float32
    frontend_config: FrontEndConfig
    session: Session
    description: str = ""
    bundle: Bundle | None = None  # the bundle it came from, when it came from one
    mount: MountConfig | None = None  # the model was trained on mount-aligned windows (edge/mount.py)
    posture: PostureConfig | None = None  # sitting / standing read against the session's postures (edge/posture.py)
    filters: FilterDesign | None = None  # the front-end's filter coefficients (None: designed with scipy.signal)


def model_from_bundle(bundle: Bundle, session: Session, description: str = "") -> Model:
    """The pipeline's view of an `edge.bundle.Bundle` (already validated by load_bundle)."""
    return Model(tuple(bundle.classes), np.asarray(bundle.mean, np.float32), np.asarray(bundle.std, np.float32),
                 bundle.frontend_config, session, description, bundle=bundle, mount=bundle.mount, posture=bundle.posture,
                 filters=bundle.frontend_filters)


def load_model(bundle_dir: str | Path = DEFAULT_BUNDLE, backend: str = "tflite", precision: str = "int8",
               num_threads: int = 1) -> Model:
    """Load a bundle and open an inference session for it (raises BundleError / EdgeError);
    precision "auto" picks per CPU (edge.inference.auto_precision) and the description says what and why."""
    from edge.bundle import load_bundle
    from edge.inference import create_session

    bundle_dir = Path(bundle_dir)
    if not bundle_dir.exists():
        hint = " (the model shipped with the package is missing: reinstall, or pass --bundle DIR)" \
            if bundle_dir == DEFAULT_BUNDLE else ""
        raise EdgeError(f"bundle directory {bundle_dir} does not exist{hint}; "
                        "pass --bundle DIR, a directory written by `har-export`")
    bundle = load_bundle(bundle_dir)
    session = create_session(bundle, backend=backend, precision=precision, num_threads=num_threads)
    picked = f"{session.precision}, {session.precision_reason}" if precision == "auto" else precision
    return model_from_bundle(bundle, session, description=f"{bundle_dir} [{backend} {picked}]")
