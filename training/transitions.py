"""Postural transitions as training classes: HAPT's activities 7-12 (stand-to-sit ... lie-to-stand).

A window belongs to a transition when its middle sample lies inside the transition's labelled segment;
such windows are cut every `hop` samples (transitions last 2-5 s, so a finer hop than the device's gives
the few hundred HAPT transitions enough windows) by the same front-end over the same whole experiments as
the activity windows. They are added to the training windows only: validation and the streamed score
keep the windows of classes 1-6. A model trained with them has 12 outputs, and the runtime's smoother
(edge/postprocess.py) uses a recognised transition to name the posture that follows it.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from firmware_bridge.recording import HaptSource

from edge.frontend import CLASSES, FrontEndConfig, filter_recording
from edge.postprocess import TRANSITION_POSTURE

from training.data import WindowSet

TRANSITION_NAMES = tuple(TRANSITION_POSTURE)  # HAPT activities 7-12, in their id order
ALL_CLASSES = tuple(CLASSES) + TRANSITION_NAMES


def load_transition_windows(path, subjects=None, config: FrontEndConfig = FrontEndConfig(), hop: int = 16) -> WindowSet:
    """Windows (N, 128, 9) whose middle sample lies inside a transition segment; y = 6..11 (ALL_CLASSES)."""
    source = HaptSource(path)
    transitions = [seg for seg in source.segments() if seg.activity > len(CLASSES)]
    wanted = None if subjects is None else {int(s) for s in subjects}
    size = config.window
    parts: dict[str, list] = {k: [] for k in ("X", "y", "subject", "experiment", "start")}
    for experiment, user in source.experiments():
        if wanted is not None and user not in wanted:
            continue
        rows = [seg for seg in transitions if seg.experiment == experiment and seg.user == user]
        if not rows:
            continue
        raw = np.asarray(source.read_experiment(experiment, user), dtype=np.float64)  # (n, 6)
        channels = filter_recording(raw, config)  # (n, 9)
        for seg in rows:
            middles = np.arange(seg.first - 1, seg.last, hop)  # 0-based middle samples inside the segment
            starts = middles - size // 2
            starts = starts[(starts >= 0) & (starts + size <= len(raw))]
            if not len(starts):
                continue
            parts["X"].append(np.stack([channels[s:s + size] for s in starts]))  # (k, 128, 9)
            parts["y"].append(np.full(len(starts), seg.activity - 1))
            parts["subject"].append(np.full(len(starts), user))
            parts["experiment"].append(np.full(len(starts), experiment))
            parts["start"].append(starts)
    return WindowSet(np.concatenate(parts["X"]).astype(np.float32), np.concatenate(parts["y"]).astype(np.int64),
                     np.concatenate(parts["subject"]).astype(np.int64),
                     np.concatenate(parts["experiment"]).astype(np.int64),
                     np.concatenate(parts["start"]).astype(np.int64), classes=ALL_CLASSES)


def with_transitions(device_windows: WindowSet, train_windows: WindowSet, path, subjects=None):
    """(validation windows, training windows) with the 12 class names; transition windows join training only."""
    transitions = load_transition_windows(path, subjects)
    def both(name: str) -> np.ndarray:
        return np.concatenate([getattr(train_windows, name), getattr(transitions, name)])

    joined = WindowSet(both("X"), both("y"), both("subject"), both("experiment"), both("start"), classes=ALL_CLASSES)
    return replace(device_windows, classes=ALL_CLASSES), joined
