"""Label smoothing over recent windows: per-window probabilities -> the label to show.

Windows overlap by half and activities last seconds, so a single window that flips to another
class is more often a mistake than a change. Two causal smoothers, each over the last `n`
windows, and a confidence floor below which the label is `uncertain`:

- `average`: mean of the last n probability vectors; label = its argmax, confidence = its max.
- `vote`:    k-of-n voting on the per-window argmax; the winning class needs at least k votes;
             confidence = mean probability of the winning class over the last n windows.
- `none`:    the window's own argmax and probability.

Settings (`SmoothingConfig`) are apart from state (`LabelSmoother`) so a CLI can build one from
flags and a test can build many.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

UNCERTAIN = "uncertain"
METHODS = ("average", "vote", "none")


class SmoothingConfigError(ValueError):
    """Inconsistent smoothing settings."""


@dataclass(frozen=True)
class SmoothingConfig:
    method: str = "average"
    n: int = 3  # recent windows considered (the current one included); 3 windows = 2.56 s of new data
    k: int = 2  # votes the winner needs (method "vote")
    threshold: float = 0.5  # confidence below this -> "uncertain" (0 disables)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SmoothingConfigError(f"smoothing method {self.method!r} unknown; choose one of {', '.join(METHODS)}")
        if self.n < 1:
            raise SmoothingConfigError(f"smoothing over n={self.n} windows: n must be >= 1")
        if self.method == "vote" and not 1 <= self.k <= self.n:
            raise SmoothingConfigError(f"k-of-n voting needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0.0 <= self.threshold <= 1.0:
            raise SmoothingConfigError(f"confidence threshold {self.threshold} must lie in [0, 1]")


@dataclass(frozen=True)
class Decision:
    label: str  # after smoothing and threshold: a class name or "uncertain"
    raw_label: str  # argmax of this window alone
    confidence: float  # confidence of the smoothed decision (see module doc)


class LabelSmoother:
    """Causal smoothing of window probabilities; `reset()` after a gap or reconnect."""

    def __init__(self, classes: list[str] | tuple[str, ...], config: SmoothingConfig = SmoothingConfig()):
        if len(classes) < 2:
            raise SmoothingConfigError(f"need at least two classes, got {list(classes)}")
        self.classes = tuple(classes)
        self.config = config
        self._history: deque[list[float]] = deque(maxlen=config.n)  # each C probabilities

    def reset(self) -> None:
        self._history.clear()

    def push(self, probs: np.ndarray) -> list[Decision]:
        """probs (k, C) of consecutive windows -> one Decision per window."""
        probs = np.asarray(probs, dtype=np.float64)
        if probs.ndim != 2 or probs.shape[1] != len(self.classes):
            raise SmoothingConfigError(f"probabilities must have shape (k, {len(self.classes)}), got {probs.shape}")
        # A handful of classes over a few windows: plain Python lists beat numpy's per-call cost.
        return [self._decide(p) for p in probs.tolist()]

    def _decide(self, p: list[float]) -> Decision:
        self._history.append(p)
        classes, cfg = self.classes, self.config
        raw_index = _argmax(p)
        if cfg.method == "none":
            index, confidence = raw_index, p[raw_index]
        elif cfg.method == "average":
            mean = [sum(column) / len(self._history) for column in zip(*self._history)]  # (C,)
            index = _argmax(mean)
            confidence = mean[index]
        else:  # vote
            votes = [0] * len(classes)
            for h in self._history:
                votes[_argmax(h)] += 1
            index = _argmax(votes)  # ties: the lower class index, deterministic
            confidence = sum(h[index] for h in self._history) / len(self._history)
            if votes[index] < cfg.k:
                return Decision(UNCERTAIN, classes[raw_index], confidence)
        label = classes[index] if confidence >= cfg.threshold else UNCERTAIN
        return Decision(label, classes[raw_index], confidence)


def _argmax(values) -> int:
    """Index of the largest value; the first one on ties (like np.argmax)."""
    return max(range(len(values)), key=values.__getitem__)


def softmax(logits: np.ndarray) -> np.ndarray:
    """(k, C) logits -> (k, C) probabilities, float64, numerically safe."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
