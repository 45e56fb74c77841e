"""Streamed first-session accuracy: the headline figure of a cross-validation run, measured as a new wearer
meets the device.

Each fold's checkpoint scores only its own held-out users (never seen in its training or normalization; the
epoch kept was chosen on nothing they did, `select_epoch=last`). Each held-out wearer's raw HAPT recordings
go through `edge.pipeline.Pipeline` in time order (experiment order), in blocks of the front-end's hop (the
device's 64-sample grid from the start of each recording), with the mount calibration starting empty at
their first recording and carried into the next, exactly as `har-edge replay --mount-calibration FILE` does.
Scored: the windows lying wholly inside one labelled segment of classes 1-6, both `raw_label` (the window's
own argmax) and `label` (what the wearer sees, after smoothing; "uncertain" counts as wrong). Label lag: for
each labelled bout of at least `MIN_BOUT_S`, the seconds from its first sample to the end of the first window
(ending inside the bout) whose `label` names it; a bout never named counts its whole length.

The model runs inside the Pipeline either as the fold's torch checkpoint (`TorchSession`: fast, fp32) or as
an exported bundle (`har-export`, TFLite / ONNX, int8 / fp32). Labels are read only to score.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from firmware_bridge.recording import HaptSource, hapt_sample_activities

from edge.frontend import FrontEnd, FrontEndConfig
from edge.model import Model
from edge.mount import MOUNT_STATES, MountCalibration, MountConfig, gravity_directions
from edge.pipeline import Pipeline
from edge.postprocess import LabelSmoother, SmoothingConfig
from edge.posture import RiseTracker
from edge.sources import SampleBlock

from training.checkpoint import load_checkpoint

MIN_BOUT_S = 10.0  # bouts shorter than this are not timed for label lag
N_ACTIVITIES = 6   # HAPT activities 1-6 are the classes; 7-12 are postural transitions


class TorchSession:
    """edge.model.Session over a torch model: predict(windows (k, 128, 9) normalized) -> logits."""

    def __init__(self, model: torch.nn.Module):
        self.model = model.eval()

    @torch.no_grad()
    def predict(self, windows: np.ndarray) -> np.ndarray:
        return self.model(torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))).numpy()  # (k, C)


def checkpoint_model(path: str | Path) -> tuple[Model, dict]:
    """A `har-train` checkpoint as the Pipeline's Model (torch fp32 session) -> (model, checkpoint)."""
    network, checkpoint = load_checkpoint(path)
    mount = MountConfig.from_dict(checkpoint["mount"], f"{path} mount") if checkpoint.get("mount") else None
    model = Model(tuple(checkpoint["classes"]), np.asarray(checkpoint["norm"]["mean"], np.float32),
                  np.asarray(checkpoint["norm"]["std"], np.float32),
                  FrontEndConfig.from_dict(checkpoint["frontend"]), TorchSession(network),
                  description=f"{path} [torch fp32]", mount=mount)
    return model, checkpoint


@dataclass
class Recording:
    experiment: int
    user: int
    raw: np.ndarray     # (n, 6) acc (g) then gyro (rad/s)
    activity: np.ndarray  # (n,) int: HAPT activity id 1-12 of each sample, 0 where unlabelled


class HaptRecordings:
    """The raw recordings of the HAPT data set, per user in time (experiment) order, with per-sample labels."""

    def __init__(self, path: str | Path):
        self.source = HaptSource(path)
        self.segments = self.source.segments()

    def of_user(self, user: int) -> list[Recording]:
        recordings = []
        for experiment, owner in self.source.experiments():
            if owner != user:
                continue
            raw = np.asarray(self.source.read_experiment(experiment, user), dtype=np.float64)  # (n, 6)
            activity = np.array(hapt_sample_activities(self.segments, experiment, user, len(raw),
                                                       self.source.where("labels.txt")), dtype=np.int64)  # (n,)
            recordings.append(Recording(experiment, user, raw, activity))
        return recordings


@dataclass
class RecordingScore:
    experiment: int
    windows: int = 0        # scored windows (wholly inside one labelled segment of classes 1-6)
    raw_correct: int = 0
    label_correct: int = 0
    uncertain: int = 0
    lags_s: list = field(default_factory=list)  # one per bout >= MIN_BOUT_S
    never_named: int = 0    # bouts whose label never appeared
    notes: list = field(default_factory=list)   # what the runtime said (calibration, re-mount)
    by_state: dict = field(default_factory=dict)  # MOUNT_STATES name -> [windows, label correct]


def window_classes(activity: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """(k,) class index 0-5 of each window ending at `ends` (exclusive) that lies inside one segment of an
    activity 1-6, else -1."""
    out = np.full(len(ends), -1, dtype=np.int64)
    for i, end in enumerate(ends):
        if end < window or end > len(activity):
            continue
        span = activity[end - window:end]
        if 1 <= span[0] <= N_ACTIVITIES and np.all(span == span[0]):
            out[i] = span[0] - 1
    return out


def activity_runs(activity: np.ndarray) -> list[tuple[int, int, int]]:
    """(start, end exclusive, HAPT activity id, 0 where unlabelled) of each run of one value, in order."""
    change = np.flatnonzero(np.diff(activity)) + 1
    starts, ends = np.r_[0, change], np.r_[change, len(activity)]
    return [(int(s), int(e), int(activity[s])) for s, e in zip(starts, ends)]


def bouts(activity: np.ndarray, min_samples: int) -> list[tuple[int, int, int]]:
    """(start, end exclusive, class index) of each run of one activity 1-6 lasting >= min_samples."""
    return [(s, e, kind - 1) for s, e, kind in activity_runs(activity)
            if 1 <= kind <= N_ACTIVITIES and e - s >= min_samples]


def result_probs(results: list[dict], classes) -> np.ndarray:
    """(k, C) the probabilities the window results recorded."""
    return np.array([[r["probs"][c] for c in classes] for r in results]).reshape(-1, len(classes))


def result_truth(results: list[dict], recording: Recording, frontend: FrontEndConfig) -> np.ndarray:
    """(k,) class index 0-5 of each result's window (-1: not wholly inside one labelled activity)."""
    return window_classes(recording.activity, result_ends(results), frontend.window)


def result_ends(results: list[dict]) -> np.ndarray:
    """(k,) each result's window end (`sample_end`: one past its last sample)."""
    return np.array([r["sample_end"] for r in results], dtype=np.int64)


def score_recording(results: list[dict], recording: Recording, classes, frontend: FrontEndConfig,
                    states: list[str] | None = None) -> RecordingScore:
    """`states`: each window's MOUNT_STATES name, for the breakdown (None: not broken down)."""
    score = RecordingScore(recording.experiment)
    ends = result_ends(results)  # (k,)
    truth = window_classes(recording.activity, ends, frontend.window)  # (k,), as result_truth gives it
    for i, (result, t) in enumerate(zip(results, truth)):
        if t < 0:
            continue
        score.windows += 1
        score.raw_correct += result["raw_label"] == classes[t]
        score.label_correct += result["label"] == classes[t]
        score.uncertain += result["label"] == "uncertain"
        if states is not None:
            tally = score.by_state.setdefault(states[i], [0, 0])
            tally[0] += 1
            tally[1] += result["label"] == classes[t]
    rate = frontend.sample_rate_hz
    window_ends = ends.tolist()  # plain ints, for the label lag of each bout
    for start, end, c in bouts(recording.activity, int(MIN_BOUT_S * rate)):
        named = [e for e, r in zip(window_ends, results) if start < e <= end and r["label"] == classes[c]]
        if named:
            score.lags_s.append((named[0] - start) / rate)
        else:
            score.lags_s.append((end - start) / rate)
            score.never_named += 1
    return score


def stream_recording(model: Model, recording: Recording, smoothing: SmoothingConfig,
                     calibration: MountCalibration | None, notes: list) -> Streamed:
    """One recording through a fresh Pipeline (as one `har-edge replay`), the calibration carried in and out:
    the window results, and of each window its MOUNT_STATES name, gravity direction and trust as labelled."""
    pipeline = Pipeline(model, smoothing, calibration=calibration, notify=notes.append)
    hop, n = model.frontend_config.hop, len(recording.raw)
    seq = np.arange(n, dtype=np.int64)
    t_us = (seq * (1e6 / model.frontend_config.sample_rate_hz)).astype(np.int64)
    results: list[dict] = []
    states: list[str] = []
    gravity, trusted = [], []
    for i in range(0, n, hop):  # the device's grid: a block per hop, windows every 64 samples from the start
        new = pipeline.process(SampleBlock(seq[i:i + hop], t_us[i:i + hop], recording.raw[i:i + hop], 0.0))
        results += new
        if new:  # a hop's block completes at most one window: the pipeline's flags are that window's
            states += pipeline.mount_states
        if new and calibration is not None:
            gravity.append(np.array(pipeline.window_gravity).reshape(-1, 3))  # (1, 3)
            trusted.append(np.array(pipeline.trusted_flags, bool))  # (1,)
    # The posture stage's inputs that do not depend on the model (it may have no rule yet: they are fitted on
    # these streams): the same windows as the pipeline's (one segment, no gaps), through its rise tracker.
    fc = model.frontend_config
    windows, ends = FrontEnd(fc, model.filters).push(recording.raw)  # (k, 128, 9), (k,)
    if not np.array_equal(ends, result_ends(results)):
        raise ValueError(f"experiment {recording.experiment}: the pipeline's windows are not the front-end's")
    tracker = RiseTracker(fc.sample_rate_hz, fc.window, fc.hop)
    rises = [tracker.push(w, e) for w, e in zip(windows, ends.tolist())]
    if calibration is None:  # no mount stage: each window's gravity as the posture stage computes it without one
        gravity = [gravity_directions(windows)]  # (k, 3)
    return Streamed(recording, results, notes, states,
                    np.concatenate(gravity) if gravity else np.zeros((len(results), 3)),
                    np.concatenate(trusted) if trusted else np.zeros(len(results), bool), rises)


@dataclass
class Streamed:
    """One recording as the Pipeline labelled it."""
    recording: Recording
    results: list  # the Pipeline's window results, in stream order
    notes: list    # what the runtime said while streaming it (calibration, re-mount)
    states: list = field(default_factory=list)  # each window's MOUNT_STATES name
    gravity: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))  # (k, 3) gravity directions as cut
    trusted: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # (k,) aligned by a checked reference
    rises: list = field(default_factory=list)  # (k,) edge.posture.RiseState: what the rise tracker said


def stream_user(model: Model, recordings: list[Recording], smoothing: SmoothingConfig = SmoothingConfig(),
                calibration_factory=None) -> list[Streamed]:
    """A new wearer: calibration empty at their first recording, carried to the next (in experiment order).
    `calibration_factory(mount_config)` makes the empty calibration (default `MountCalibration`)."""
    calibration = None
    if model.mount is not None:
        calibration = (calibration_factory or MountCalibration)(model.mount)
    streamed = []
    for recording in sorted(recordings, key=lambda r: r.experiment):
        notes: list[str] = []
        streamed.append(stream_recording(model, recording, smoothing, calibration, notes))
    return streamed


def resmoothed(results: list[dict], classes, smoothing: SmoothingConfig) -> list[dict]:
    """The same windows' probabilities through another smoother (what the Pipeline would have shown with it:
    the smoother is its last stage and restarts with each recording)."""
    smoother = LabelSmoother(classes, smoothing)
    probs = result_probs(results, classes)  # (k, C)
    return [r | {"label": d.label, "confidence": d.confidence} for r, d in zip(results, smoother.push(probs))]


def score_user(fold: int, user: int, streamed: list[Streamed], model: Model,
               smoothing: SmoothingConfig | None = None) -> dict:
    """A user's summary; `smoothing` re-smooths the recorded probabilities first (None: as streamed)."""
    scores = []
    for s in streamed:
        results = s.results if smoothing is None else resmoothed(s.results, model.classes, smoothing)
        score = score_recording(results, s.recording, model.classes, model.frontend_config, s.states or None)
        score.notes = s.notes
        scores.append(score)
    return user_summary(fold, user, scores)


def user_summary(fold: int, user: int, scores: list[RecordingScore]) -> dict:
    n = sum(s.windows for s in scores)
    return {
        "fold": fold, "user": user, "windows": n,
        "raw_correct": sum(s.raw_correct for s in scores), "label_correct": sum(s.label_correct for s in scores),
        "uncertain": sum(s.uncertain for s in scores),
        "raw_accuracy": sum(s.raw_correct for s in scores) / max(1, n),
        "label_accuracy": sum(s.label_correct for s in scores) / max(1, n),
        "lags_s": [lag for s in scores for lag in s.lags_s],
        "by_mount_state": {state: [sum(s.by_state.get(state, (0, 0))[j] for s in scores) for j in (0, 1)]
                           for state in MOUNT_STATES},  # [windows, label correct]
        "never_named": sum(s.never_named for s in scores),
        "recordings": [{"experiment": s.experiment, "windows": s.windows,
                        "raw_accuracy": s.raw_correct / max(1, s.windows),
                        "label_accuracy": s.label_correct / max(1, s.windows), "notes": s.notes} for s in scores],
    }


def pooled(users: list[dict]) -> dict:
    """Totals over users: accuracies over all their scored windows, the worst user, the median label lag."""
    n = sum(u["windows"] for u in users)
    lags = [lag for u in users for lag in u["lags_s"]]
    worst = min(users, key=lambda u: u["label_accuracy"])
    return {
        "windows": n,
        "raw_accuracy": sum(u["raw_correct"] for u in users) / n,
        "label_accuracy": sum(u["label_correct"] for u in users) / n,
        "uncertain": sum(u["uncertain"] for u in users),
        "worst_user": worst["user"], "worst_label_accuracy": worst["label_accuracy"],
        "users_below_90": [u["user"] for u in users if u["label_accuracy"] < 0.9],
        "median_lag_s": float(np.median(lags)) if lags else None,
        "bouts": len(lags), "never_named": sum(u["never_named"] for u in users),
        "by_mount_state": {state: [sum(u.get("by_mount_state", {}).get(state, (0, 0))[j] for u in users)
                                   for j in (0, 1)] for state in MOUNT_STATES},  # [windows, label correct]
    }


def fold_model(checkpoint_path: Path, backend: str, precision: str) -> tuple[Model, dict]:
    """The fold's model as the Pipeline runs it: its torch checkpoint, or its exported bundle
    (`fold_K/bundle`, written by `har-export fold_K/model.pt --out fold_K/bundle`)."""
    from training.checkpoint import read_checkpoint

    if backend == "torch":
        return checkpoint_model(checkpoint_path)
    from edge.model import load_model

    bundle = checkpoint_path.parent / "bundle"
    return load_model(bundle, backend, precision), read_checkpoint(checkpoint_path)


def stream_run(run_dir: str | Path, data, backend: str = "torch", precision: str = "fp32",
               smoothing: SmoothingConfig = SmoothingConfig(), calibration_factory=None, log=print):
    """Every fold of a `har-train cv` run on its own held-out users, streamed.
    `data`: a HaptRecordings (or anything with its `of_user`). -> [(fold, user, [Streamed], model)], in fold order."""
    from training.cv import fold_checkpoints

    out = []
    for k, path in enumerate(fold_checkpoints(run_dir)):
        model, checkpoint = fold_model(path, backend, precision)
        selection = checkpoint["metrics"].get("selection", "")
        if selection.startswith("best validation"):
            log(f"warning: {path} kept an epoch chosen on its held-out users ({selection}); "
                "its streamed figure is optimistic")
        seen = set(checkpoint["subjects"]["train"])
        for user in checkpoint["subjects"]["val"]:
            if user in seen:
                raise ValueError(f"{path}: user {user} is both a training and a held-out user")
            out.append((k, user, stream_user(model, data.of_user(user), smoothing, calibration_factory), model))
            summary = score_user(k, user, out[-1][2], model)
            log(f"{Path(run_dir).name}/fold_{k} user {user:2d}: {summary['windows']} windows  raw "
                f"{100 * summary['raw_accuracy']:.1f}%  label {100 * summary['label_accuracy']:.1f}%")
    return out
