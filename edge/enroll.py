"""Wearer enrolment: a small personal head fitted on the device from a few minutes of the wearer's own
labelled data, numpy + scipy only (docs/enrolment.md has the design and why).

    har-edge enroll --port /dev/har-imu --profile alice.json      # guided: stand, sit, lie down, walk
    har-edge enroll --recording first.csv --profile alice.json    # a recording with a label column
    har-edge replay second.csv --profile alice.json               # run | replay | record | demo apply it

What is fitted. The bundle's models give, beside the logits, the penultimate features F of each window
(docs/BUNDLE.md, har-bundle/2). The profile adds a correction to the logits,

    logits' = logits + W @ ((phi - mean) / scale) + b,   phi = [features (F), gravity direction (3)]

W (C, F + 3), b (C): an L2-regularized multinomial logistic regression on the enrolment windows, the base
logits held fixed (an offset), so with little data it stays close to the base model (W = b = 0 is the
prior). The penalty is chosen on the enrolment data itself: fit on the first half of each class's windows,
score on the second, and the other way round (`choose_l2`). The gravity direction (unit mean of
total_acc - body_acc over the window, in the frame the model sees) is there because what is personal is
mostly how the wearer sits and stands: the tilt of the pelvis. Only the classes the enrolment shows are
corrected, and only in windows the model itself puts in one of them (`Head.corrected`); the classes weigh
equally (the 30 s walk does not outweigh the 20 s postures).

Mount alignment (edge/mount.py). The device runs uncalibrated (identity) until the wearer has walked for
about 25 s, and aligned afterwards. The profile has one head per state (`STATES`): one fitted on the
enrolment windows as cut, one on the same windows aligned by the wearer's reference from the enrolment's
own moving windows; the runtime applies to each window the head of the state it was made in.

The profile file (JSON, written atomically) names the bundle's `model_id` (the sha256 of its model files),
so a profile is never applied to another model.
"""
from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from edge.model import EdgeError, Model
from edge.mount import MountCalibration, gravity_directions, moving, reference_direction, rotate_windows, rotation_onto
from edge.paths import write_text_atomically
from edge.pipeline import Pipeline
from edge.scoring import window_truth

if TYPE_CHECKING:
    from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder, Sample

    from edge.bundle import Bundle
    from edge.model import FeatureSession
    from edge.sources import ByteChunk, LinkEvent

PROFILE_FORMAT = "har-profile/1"
L2_GRID = (0.1, 0.03, 0.01, 0.003, 0.001)  # penalties on W, b tried; chosen on the wearer's own enrolment data
MIN_WINDOWS_PER_CLASS = 3
MOVING_CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS")
STATIC_CLASSES = ("SITTING", "STANDING", "LAYING")
STILL_RMS_G = 0.1   # body_acc RMS above this: the window is moving (HAPT: median static 0.01 g, walking > 0.18 g)


class ProfileError(ValueError):
    """A profile that cannot be used or made; the message names the file and says what to do."""


@dataclass(frozen=True)
class Step:
    label: str          # the class it enrols
    instruction: str    # what the wearer is asked to do
    seconds: float      # recorded seconds (after GET_READY_S to get into position)


def guided_steps(posture_seconds: float = 20.0) -> tuple[Step, ...]:
    """The guided enrolment's steps: three postures of `posture_seconds` each, then a walk 1.5 times as long
    (the walk also gives the mount calibration its reference)."""
    return (
        Step("STANDING", "stand still, arms relaxed", posture_seconds),
        Step("SITTING", "sit down on a chair and stay still", posture_seconds),
        Step("LAYING", "lie down on your back and stay still", posture_seconds),
        Step("WALKING", "walk at your normal pace (on the flat)", 1.5 * posture_seconds),
    )
GET_READY_S = 5.0       # not recorded: the wearer moves into position
# The shortest posture step that can be enrolled: a class needs 2 * MIN_WINDOWS_PER_CLASS = 6 whole windows, which
# on the stream's 64-sample grid (not aligned with the step) take up to 128 + 6 * 64 samples = 10.24 s at 50 Hz.
GUIDED_MIN_STEP_S = 12.0
MAX_ATTEMPTS = 3


# -- the profile ----------------------------------------------------------------------------------

def still_rms(windows: np.ndarray) -> np.ndarray:
    """(n, 128, 9) un-normalized windows -> (n,) RMS of the body acceleration (g): above STILL_RMS_G, moving."""
    return np.asarray(np.sqrt((windows[:, :, 0:3].astype(np.float64) ** 2).sum(axis=2).mean(axis=1)))


def personal_inputs(features: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """phi: (k, F) features and (k, 128, 9) un-normalized windows as the model saw them -> (k, F + 3)."""
    return np.concatenate([features.astype(np.float64), gravity_directions(windows)], axis=1)  # (k, F + 3)


@dataclass
class Head:
    """One state's correction: logits += weights @ ((phi - mean) / scale) + bias, for the windows the model
    itself puts in one of the classes the enrolment showed (`corrects`); the others are left as they are,
    because a linear correction extrapolates wildly where it saw no data (measured: enrolled on standing
    and sitting only, an ungated correction turned a wearer's lying and walking into sitting)."""

    corrects: np.ndarray            # (C,) bool: the classes enrolled, among which the head decides
    mean: np.ndarray                # (D,) standardization of phi, D = F + 3
    scale: np.ndarray               # (D,) > 0
    weights: np.ndarray             # (C, D); zero rows for the classes the enrolment did not show
    bias: np.ndarray                # (C,)
    fit: dict[str, Any] = field(default_factory=dict)   # how it was fitted (human-readable, not used to apply)

    def correction(self, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(k, F), (k, 128, 9) -> (k, C) added to the logits."""
        z = (personal_inputs(features, windows) - self.mean) / self.scale  # (k, D)
        correction: np.ndarray = (z @ self.weights.T + self.bias).astype(np.float32)  # (k, C)
        return correction

    def corrected(self, logits: np.ndarray, features: np.ndarray, windows: np.ndarray) -> np.ndarray:
        """(k, C), (k, F), (k, 128, 9) -> (k, C): corrected where the model's own top class is enrolled."""
        out = np.array(logits, np.float32, copy=True)  # (k, C)
        mine = self.corrects[out.argmax(axis=1)]  # (k,)
        if mine.any():
            out[mine] += self.correction(features[mine], windows[mine])
        return out

    def to_dict(self, classes: Sequence[str]) -> dict[str, Any]:
        def rounded(a: np.ndarray) -> Any:  # nested lists of floats
            return np.round(np.asarray(a, np.float64), 6).tolist()
        return {"corrects": [c for c, on in zip(classes, self.corrects) if on], "fit": self.fit,
                "mean": rounded(self.mean), "scale": rounded(self.scale),
                "bias": dict(zip(classes, rounded(self.bias))), "weights": dict(zip(classes, rounded(self.weights)))}


STATES = ("uncalibrated", "aligned")  # the mount calibration's state when the window was made (edge/mount.py)


@dataclass
class Profile:
    model_id: str                   # edge.bundle.Bundle.model_id of the bundle it was fitted on
    classes: tuple[str, ...]
    heads: dict[str, Head]          # per STATES entry; a state without a head is left uncorrected
    fit: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def apply(self, logits: np.ndarray, features: np.ndarray, windows: np.ndarray,
              aligned: np.ndarray, checked: np.ndarray | None = None) -> np.ndarray:
        """logits (k, C), features (k, F), windows (k, 128, 9) as the model saw them, aligned (k,) bool: whether
        the mount calibration had rotated each window, checked (k,) bool: ... by a reference this session's
        walking confirmed (None: all aligned ones) -> corrected logits (k, C).
        A window rotated by a saved reference not yet checked is left uncorrected: the aligned head assumes the
        reference describes the board, and after a re-mount it does not (measured: docs/results.md "Wearer
        enrolment", a saved calibration with a profile)."""
        out = np.array(logits, np.float32, copy=True)  # (k, C)
        confirmed = aligned if checked is None else aligned & checked  # (k,)
        for state, mask in (("uncalibrated", ~aligned), ("aligned", confirmed)):
            if state in self.heads and mask.any():
                out[mask] = self.heads[state].corrected(logits[mask], features[mask], windows[mask])
        # A correction may not contradict the window's own motion: a moving window put into a posture, or a still
        # one into walking, where the model had it consistent, is left as the model had it (measured: an aligned
        # head turned a wearer's stairs into sitting, docs/results.md "Wearer enrolment").
        kind = self._kinds()  # (C,) +1 moving class, -1 static, 0 neither
        if kind.any():
            motion = np.where(still_rms(windows) > STILL_RMS_G, 1, -1)  # (k,)
            before, after = kind[logits.argmax(axis=1)], kind[out.argmax(axis=1)]  # (k,), (k,)
            revert = (after == -motion) & (before != -motion)
            out[revert] = logits[revert]
        return out

    def _kinds(self) -> np.ndarray:
        return np.array([1 if c in MOVING_CLASSES else -1 if c in STATIC_CLASSES else 0 for c in self.classes])

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROFILE_FORMAT,
            "what": "har-edge wearer profile: logits += weights @ ((phi - mean) / scale) + bias, phi = [model "
                    "features, gravity direction x y z], one head per mount-calibration state (docs/enrolment.md)",
            "model_id": self.model_id,
            "classes": list(self.classes),
            "fit": self.fit,
            "heads": {state: head.to_dict(self.classes) for state, head in self.heads.items()},
        }


def check_bundle_for_profiles(model: Model) -> Bundle:
    """The model's bundle, when it has the features output a profile needs; else a ProfileError."""
    bundle = model.bundle
    if bundle is None or bundle.n_features is None:
        where = bundle.path if bundle is not None else model.description
        raise ProfileError(f"{where}: this bundle has no features output (har-bundle/1), which a wearer profile needs; "
                           "re-export it with `har-export CHECKPOINT --out DIR` (har-bundle/2)")
    return bundle


def _readable_json(data: dict[str, Any]) -> str:
    """Indented JSON with every list of plain values on one line (a weight row is one line, not 67)."""
    text = json.dumps(data, indent=1)
    return re.sub(r"\[\n\s+([^\[\]{}]*?)\n\s*\]", lambda m: "[" + " ".join(m.group(1).split()) + "]", text) + "\n"


def save_profile(profile: Profile, path: str | Path) -> Path:
    """Atomic: a crash mid-write leaves the old file (temp file in the same folder, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, _readable_json(profile.to_dict()))
    except OSError as exc:
        raise ProfileError(f"cannot write the profile {path}: {exc.strerror or exc}; "
                           "choose a writable --profile path") from None
    profile.path = path
    return path


def _read_head(head: dict[str, Any], classes: tuple[str, ...], n_inputs: int) -> Head | None:
    """One head of a profile file -> Head, None when its arrays do not fit; KeyError/TypeError/ValueError
    when it is not shaped like a head at all."""
    mean, scale = (np.asarray(head[k], np.float64) for k in ("mean", "scale"))  # (D,) each
    weights = np.asarray([head["weights"][c] for c in classes], np.float64)  # (C, D)
    bias = np.asarray([head["bias"][c] for c in classes], np.float64)  # (C,)
    fits = (set(head["corrects"]) <= set(classes) and mean.shape == scale.shape == (n_inputs,)
            and weights.shape == (len(classes), n_inputs) and bias.shape == (len(classes),) and (scale > 0).all()
            and all(np.isfinite(a).all() for a in (mean, scale, weights, bias)))
    corrects = np.array([c in head["corrects"] for c in classes])  # (C,)
    fit = head.get("fit")
    return Head(corrects, mean, scale, weights, bias, fit if isinstance(fit, dict) else {}) \
        if fits else None


def load_profile(path: str | Path, model: Model) -> Profile:
    """Read a profile for `model`; any problem is a ProfileError naming the file and what to do."""
    path = Path(path)
    again = "give --profile the profile's own file, or enrol again: `har-edge enroll --profile NEW.json ...`"
    if not path.is_file():
        raise ProfileError(f"profile {path} does not exist" + (" (it is a directory)" if path.is_dir() else "")
                           + f"; {again}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"profile {path} is not a JSON profile ({exc}); {again}") from None
    if not isinstance(data, dict) or not isinstance(data.get("format"), str) or \
            not data["format"].startswith("har-profile/"):
        raise ProfileError(f"{path} is not a har-edge wearer profile (no 'format': \"{PROFILE_FORMAT}\"); {again}")
    if data["format"] != PROFILE_FORMAT:
        raise ProfileError(f"profile {path} has format {data['format']!r}, newer than this har-edge reads "
                           f"({PROFILE_FORMAT}); upgrade har-edge, or {again}")
    bundle = check_bundle_for_profiles(model)
    n_features = bundle.n_features
    assert n_features is not None  # check_bundle_for_profiles
    if data.get("model_id") != bundle.model_id:
        raise ProfileError(f"profile {path} was fitted for another model (model_id {str(data.get('model_id'))[:12]}"
                           f"...), not {bundle.path} ({bundle.model_id[:12]}...); use the bundle it was made with "
                           f"(--bundle), or {again}")
    try:
        classes = tuple(data["classes"])
        heads = {state: _read_head(head, classes, n_features + 3) for state, head in data["heads"].items()}
        ok = classes == tuple(bundle.classes) and heads and set(heads) <= set(STATES) and all(heads.values())
    except (KeyError, TypeError, ValueError, AttributeError):
        ok = False
    if not ok:
        raise ProfileError(f"profile {path} is damaged: its heads ({', '.join(STATES)}) must give mean, scale, weights "
                           f"and bias for {bundle.n_classes} classes x {n_features + 3} finite inputs "
                           f"(scale > 0); {again}")
    fit = data.get("fit")
    return Profile(bundle.model_id, classes, {state: head for state, head in heads.items() if head is not None},
                   fit if isinstance(fit, dict) else {}, path)


def fit_head(model: Model, logits: np.ndarray, features: np.ndarray, windows: np.ndarray, labels: np.ndarray,
             l2: float) -> Head:
    """logits (n, C), features (n, F), windows (n, 128, 9) as the model saw them, labels (n,) class indices.
    -> the Head minimizing the class-balanced mean cross-entropy over the classes present + l2/2 |W, b|^2."""
    started = time.perf_counter()
    counts = np.bincount(labels, minlength=len(model.classes))  # (C,)
    present = np.flatnonzero(counts >= MIN_WINDOWS_PER_CLASS)
    if len(present) < 2:
        raise ProfileError(f"enrolment needs at least {MIN_WINDOWS_PER_CLASS} labelled windows of two classes or more; "
                           f"got {dict(zip(model.classes, counts.tolist()))}")
    keep = np.isin(labels, present)
    phi = personal_inputs(features[keep], windows[keep])  # (n, D)
    mean, scale = phi.mean(axis=0), np.maximum(phi.std(axis=0), 1e-3)  # (D,), (D,)
    z = (phi - mean) / scale  # (n, D)
    base = logits[keep][:, present].astype(np.float64)  # (n, P)
    target = np.searchsorted(present, labels[keep])  # (n,) index into present
    weight = 1.0 / (counts[present][target] * len(present))  # (n,) every class weighs 1/P in total
    n, d, p = len(z), z.shape[1], len(present)
    onehot = np.eye(p)[target]  # (n, P)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:p * d].reshape(p, d), theta[p * d:]
        s = base + z @ w.T + b  # (n, P)
        s -= s.max(axis=1, keepdims=True)
        prob = np.exp(s)
        prob /= prob.sum(axis=1, keepdims=True)  # (n, P)
        value = -np.sum(weight * np.log(prob[np.arange(n), target] + 1e-300)) + 0.5 * l2 * theta @ theta
        residual = (prob - onehot) * weight[:, None]  # (n, P) d loss / d s
        grad = np.concatenate([(residual.T @ z).ravel(), residual.sum(axis=0)]) + l2 * theta
        return value, grad

    from scipy.optimize import minimize  # late: 0.4 s of imports that only enrolment needs

    result = minimize(loss, np.zeros(p * d + p), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    weights = np.zeros((len(model.classes), d))
    bias = np.zeros(len(model.classes))
    weights[present] = result.x[:p * d].reshape(p, d)
    bias[present] = result.x[p * d:]
    fit = {"l2": l2, "windows": {model.classes[c]: int(counts[c]) for c in present},
           "fit_seconds": round(time.perf_counter() - started, 4), "optimizer": f"L-BFGS-B, {result.nit} iterations"}
    return Head(np.isin(np.arange(len(model.classes)), present), mean, scale, weights, bias, fit)


# -- enrolment windows, as the device cuts them ----------------------------------------------------

class WindowCollector(Pipeline):
    """The runtime's own decode -> gaps -> front-end path, keeping every window un-aligned with its stream
    end position instead of running the model (enrolment decides the mount reference afterwards)."""

    def __init__(self, model: Model, **kwargs: Any) -> None:
        super().__init__(model, notify=kwargs.pop("notify", lambda message: None), **kwargs)
        self.collected: list[np.ndarray] = []  # (k, 128, 9) each
        self.collected_ends: list[np.ndarray] = []  # (k,) stream positions one past each window

    def filter_and_window(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        windows, ends = super().filter_and_window(raw)  # (k, 128, 9), (k,)
        if len(ends):
            self.collected.append(windows)
            self.collected_ends.append(self.offset + ends)
        return windows[:0], ends[:0]  # nothing for the model to do

    def stream_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """-> (n, 128, 9) float32, (n,) int64, everything so far in stream order."""
        if not self.collected:
            return np.zeros((0, 128, 9), np.float32), np.zeros(0, np.int64)
        return np.concatenate(self.collected), np.concatenate(self.collected_ends)


@dataclass
class EnrolmentData:
    windows: np.ndarray   # (n, 128, 9) un-normalized front-end windows, un-aligned
    labels: np.ndarray    # (n,) class index
    source: str


def recording_windows(model: Model, samples: Sequence[Sample], labels: Sequence[str | None],
                      max_labelled_s: float | None = None,
                      source: str = "") -> EnrolmentData:
    """The labelled windows (all samples inside one activity) of a recording streamed as the device does;
    the first `max_labelled_s` seconds of them (counted in hops) when given."""
    from edge.sources import RecordingSource

    collector = WindowCollector(model)
    for item in RecordingSource(samples, rate_hz=model.frontend_config.sample_rate_hz):
        collector.process(item)
    windows, ends = collector.stream_windows()
    truth = window_truth(labels, ends.tolist(), model.frontend_config.window)
    index = {c: i for i, c in enumerate(model.classes)}
    keep = np.array([t in index for t in truth], bool)
    y = np.array([-1 if t is None else index.get(t, -1) for t in truth], np.int64)
    windows, y = windows[keep], y[keep]
    if max_labelled_s is not None:
        cfg = model.frontend_config
        n = int(round(max_labelled_s * cfg.sample_rate_hz / cfg.hop))
        windows, y = windows[:n], y[:n]
    return EnrolmentData(windows, y, source)


def wearer_reference(model: Model, windows: np.ndarray) -> np.ndarray | None:
    """The wearer's mount reference from the enrolment's moving windows, None without any (or no mount)."""
    return None if model.mount is None else reference_direction(windows, model.mount)


def enrolment_calibration(model: Model, windows: np.ndarray) -> MountCalibration | None:
    """The mount calibration the enrolment's moving windows give (what `--mount-calibration FILE` keeps), so that
    the next session starts aligned; None when the bundle has no mount or the enrolment did not move."""
    if model.mount is None:
        return None
    mask = moving(windows, model.mount)  # (n,)
    if not mask.any():
        return None
    return MountCalibration(model.mount, gravity_directions(windows[mask]).sum(axis=0), int(mask.sum()))


def model_outputs(model: Model, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, 128, 9) un-normalized windows as the model is to see them -> logits (n, C), features (n, F)."""
    x = ((windows - model.mean) / model.std).astype(np.float32)  # (n, 128, 9)
    session = cast("FeatureSession", model.session)  # check_bundle_for_profiles: the bundle has the features output
    return session.predict_with_features(x)


def as_the_device_sees(model: Model, windows: np.ndarray, reference: np.ndarray | None) -> list[np.ndarray]:
    """The enrolment windows in every state of the mount calibration the profile will meet: uncalibrated
    (as cut) and, when the bundle aligns and the wearer walked, aligned by their reference."""
    states = [windows]
    if model.mount is not None and reference is not None:
        states.append(rotate_windows(windows, rotation_onto(reference, model.mount.canonical)))
    return states


def balanced_log_loss(model: Model, head: Head, logits: np.ndarray, features: np.ndarray, windows: np.ndarray,
                      labels: np.ndarray) -> float:
    """Class-balanced mean cross-entropy of the corrected logits over the classes the head corrects."""
    present = np.flatnonzero(head.corrects)
    keep = np.isin(labels, present)
    s = head.corrected(logits[keep], features[keep], windows[keep])[:, present].astype(np.float64)  # (n, P)
    s -= s.max(axis=1, keepdims=True)
    log_prob = s - np.log(np.exp(s).sum(axis=1, keepdims=True))  # (n, P)
    target = np.searchsorted(present, labels[keep])
    return float(np.mean([-log_prob[target == t, t].mean() for t in np.unique(target)]))


def choose_l2(model: Model, logits: np.ndarray, features: np.ndarray, windows: np.ndarray, labels: np.ndarray,
              half: np.ndarray) -> tuple[float, dict[str, Any]]:
    """The L2_GRID penalty with the lowest held-out balanced log-loss, fitting on one half of each class's
    enrolment windows (in time order) and scoring on the other, both ways. Ties go to the larger penalty."""
    losses = {}
    for l2 in L2_GRID:
        losses[l2] = float(np.mean([
            balanced_log_loss(model, fit_head(model, logits[half != h], features[half != h], windows[half != h],
                                              labels[half != h], l2),
                              logits[half == h], features[half == h], windows[half == h], labels[half == h])
            for h in (0, 1)]))
    best = min(L2_GRID, key=lambda l2: (round(losses[l2], 4), -l2))
    return best, {str(k): round(v, 4) for k, v in losses.items()}


def time_halves(labels: np.ndarray) -> np.ndarray:
    """(n,) 0 for the first half of each class's windows in stream order, 1 for the second half."""
    half = np.zeros(len(labels), np.int64)
    for c in np.unique(labels):
        mine = np.flatnonzero(labels == c)
        half[mine[len(mine) // 2:]] = 1
    return half


def enrol(model: Model, data: EnrolmentData, l2: float | None = None) -> tuple[Profile, dict[str, Any]]:
    """Fit a profile on `data` -> (profile, summary of what it changes on the enrolment windows).
    One head per state of the mount calibration the windows can reach the model in (as_the_device_sees).
    l2: the penalty; None chooses it per head from L2_GRID on the enrolment data itself (choose_l2)."""
    bundle = check_bundle_for_profiles(model)
    if len(data.windows) == 0:
        raise ProfileError(f"{data.source}: no labelled window to enrol from (a window counts when its 128 samples "
                           "all carry one class label)")
    # A class needs windows in both halves of choose_l2's split: fewer than that and it is not enrolled.
    counts = np.bincount(data.labels, minlength=len(model.classes))  # (C,)
    enough = counts >= 2 * MIN_WINDOWS_PER_CLASS
    dropped = [model.classes[c] for c in np.flatnonzero((counts > 0) & ~enough)]
    if enough.sum() < 2:
        raise ProfileError(f"{data.source}: too few labelled windows to enrol: at least two classes need "
                           f"{2 * MIN_WINDOWS_PER_CLASS} windows ({2 * MIN_WINDOWS_PER_CLASS * 1.28:.0f} s) each; got "
                           f"{ {model.classes[c]: int(n) for c, n in enumerate(counts) if n} }")
    keep = enough[data.labels]
    data = EnrolmentData(data.windows[keep], data.labels[keep], data.source)
    started = time.perf_counter()
    reference = wearer_reference(model, data.windows)
    states = as_the_device_sees(model, data.windows, reference)
    heads, outputs = {}, {}
    for state, windows in zip(STATES, states):
        logits, features = outputs[state] = model_outputs(model, windows)  # (n, C), (n, F)
        losses = None
        chosen = l2
        if chosen is None:
            chosen, losses = choose_l2(model, logits, features, windows, data.labels, time_halves(data.labels))
        heads[state] = fit_head(model, logits, features, windows, data.labels, chosen)
        heads[state].fit["l2_chosen_from"] = losses
    profile = Profile(bundle.model_id, tuple(model.classes), heads, {
        "source": data.source, "windows": int(len(data.windows)),
        "too_few_windows_not_enrolled": dropped,
        "mount_reference": None if reference is None else [round(float(v), 6) for v in reference],
        "enrol_seconds": round(time.perf_counter() - started, 3),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    # What it changes on the enrolment windows, in each state the device can see them.
    summary = {"windows": len(data.windows), "states": {}, "mount_reference": profile.fit["mount_reference"]}
    for state, windows in zip(STATES, states):
        logits, features = outputs[state]
        before = logits.argmax(1)
        after = profile.apply(logits, features, windows, np.full(len(windows), state == "aligned")).argmax(1)
        per_class = {}
        for c in np.unique(data.labels):
            mask = data.labels == c
            per_class[model.classes[c]] = {"windows": int(mask.sum()), "without": int((before[mask] == c).sum()),
                                           "with": int((after[mask] == c).sum())}
        summary["states"][state] = {"without": float((before == data.labels).mean()),
                                    "with": float((after == data.labels).mean()), "per_class": per_class}
        profile.fit[f"enrolment_accuracy_{state}"] = {"without": round(summary["states"][state]["without"], 4),
                                                      "with": round(summary["states"][state]["with"], 4)}
    return profile, summary


def format_summary(summary: dict[str, Any], profile: Profile) -> str:
    lines = [f"what the profile changes on your own enrolment data ({summary['windows']} windows, "
             f"{summary['windows'] * 1.28:.0f} s), windows recognized without -> with it:"]
    for state, result in summary["states"].items():
        when = "before the mount is calibrated" if state == "uncalibrated" else "once the mount is calibrated"
        lines.append(f"  {when}: {100 * result['without']:.1f}% -> {100 * result['with']:.1f}%")
        for name, row in result["per_class"].items():
            lines.append(f"    {name:<19} {row['windows']:>3} windows: {row['without']:>3} -> {row['with']:>3}")
    lines.append(f"  fitted in {profile.fit['enrol_seconds']:.2f} s (penalty "
                 + ", ".join(f"{s} {h.fit['l2']:g}" for s, h in profile.heads.items()) + ")")
    if summary["mount_reference"] is None and "aligned" not in profile.heads:
        lines.append("  note: no walking was seen, so nothing is corrected once the mount is calibrated")
    return "\n".join(lines) + "\n"


# -- the guided enrolment --------------------------------------------------------------------------

def step_problem(step: Step, windows: np.ndarray, standing_gravity: np.ndarray | None) -> str | None:
    """Does a step's data look like what was asked? -> None, or what looked wrong (the step is repeated)."""
    if len(windows) < 3:
        return "too little data arrived (is the board connected?)"
    moving = still_rms(windows) > STILL_RMS_G
    if step.label == "WALKING":
        if moving.mean() < 0.6:
            return f"you were still in {int((~moving).sum())} of {len(windows)} windows: keep walking the whole time"
        return None
    if moving.mean() > 0.25:
        return (f"you were moving (walking?) in {int(moving.sum())} of {len(windows)} windows: "
                f"{step.instruction.split(' and ')[0]} and keep still the whole time")
    if standing_gravity is not None and step.label in ("SITTING", "LAYING"):
        g = gravity_directions(windows[~moving]).mean(axis=0)
        angle = math.degrees(math.acos(float(np.clip(g @ standing_gravity / np.linalg.norm(g), -1, 1))))
        if step.label == "LAYING" and angle < 45:
            return f"your body turned only {angle:.0f} degrees from standing: lie down flat"
        if step.label == "SITTING" and angle >= 45:
            return f"your body turned {angle:.0f} degrees from standing, as when lying: sit upright on a chair"
    return None


def guided_enrolment(model: Model, source: Iterable[ByteChunk | LinkEvent], say: Callable[[str], None],
                     decoder: FrameDecoder | CsvLineDecoder | None = None,
                     steps: tuple[Step, ...] = guided_steps(), get_ready_s: float = GET_READY_S) -> EnrolmentData:
    """Guide the wearer through `steps` on the live stream `source`; a step whose data does not look like
    what was asked is repeated (at most MAX_ATTEMPTS times). Times are stream time (the device's samples)."""
    rate = model.frontend_config.sample_rate_hz
    window = model.frontend_config.window
    # What the link does (waiting for the port, lost, back, stalled) is said between the instructions: a
    # countdown that stops with no word is a wearer left standing in front of a board that is unplugged.
    collector = WindowCollector(model, notify=lambda m: say(f"  ({m})"), decoder=decoder)  # None: binary frames
    accepted: list[tuple[Step, np.ndarray]] = []
    standing_gravity = None
    items = iter(source)
    stop = 0  # the schedule is exact in stream positions: a step starts where the one before it stopped
    try:
        # "start now" only once the board is there: the first step's time is the device's samples.
        while not collector.link["connects"]:
            try:
                collector.process(next(items))
            except StopIteration:
                raise ProfileError("the device stream ended before the enrolment started; check the connection "
                                   "and enrol again") from None
        for number, step in enumerate(steps, 1):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                ready_end = stop + int(get_ready_s * rate)
                stop = ready_end + int(step.seconds * rate)
                say(f"step {number}/{len(steps)}: {step.instruction.upper()} - start now; recording starts in "
                    f"{get_ready_s:.0f} s" + (f" (attempt {attempt})" if attempt > 1 else ""))
                said = None  # the last countdown said: ("ready" | "recording", seconds left)
                while collector.gaps.position < stop:
                    try:
                        item = next(items)
                    except StopIteration:
                        raise ProfileError("the device stream ended before the enrolment was complete; "
                                           "check the connection and enrol again") from None
                    collector.process(item)
                    position = collector.gaps.position
                    phase = "ready" if position < ready_end else "recording"
                    left = math.ceil(((ready_end if phase == "ready" else stop) - position) / rate)
                    due = left % 5 == 0 or left <= 3 if phase == "recording" else left <= 3
                    if (phase, left) != said and (due or (said or ("",))[0] != phase) and left > 0:
                        say(f"  {left}..." if phase == "ready" else f"  recording: {step.instruction}, {left} s left")
                        said = (phase, left)
                windows, ends = collector.stream_windows()
                inside = (ends - window >= ready_end) & (ends <= stop)
                problem = step_problem(step, windows[inside], standing_gravity)
                if problem is None:
                    accepted.append((step, windows[inside]))
                    if step.label == "STANDING":
                        standing_gravity = gravity_directions(windows[inside]).mean(axis=0)
                        standing_gravity /= np.linalg.norm(standing_gravity)
                    say(f"  done: {int(inside.sum())} windows of {step.label}")
                    break
                say(f"  that did not look right: {problem}. Let's repeat this step.")
            else:
                raise ProfileError(f"step '{step.instruction}' did not work after {MAX_ATTEMPTS} attempts; "
                                   "enrol again, or enrol from a labelled recording (--recording)")
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()
    index = {c: i for i, c in enumerate(model.classes)}
    missing = [s.label for s, _ in accepted if s.label not in index]
    if missing:
        raise EdgeError(f"the bundle has no class {missing}; it cannot be enrolled with these steps")
    return EnrolmentData(np.concatenate([w for _, w in accepted]),
                         np.concatenate([np.full(len(w), index[s.label]) for s, w in accepted]),
                         "guided enrolment")
