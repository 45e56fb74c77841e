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

Postural transitions: a model whose classes include HAPT's transitions (STAND_TO_SIT ... LIE_TO_STAND,
`TRANSITION_POSTURE`) gives each window their probabilities too. The smoother then works on the
activities alone (renormalized), and keeps a *posture*: a window whose transition probabilities sum to
more than `transition_threshold` sets it to the posture its most likely transition leads to (SIT_TO_STAND ->
STANDING). While the posture is SITTING or STANDING and the activity label is the other of the two, the
label shown is the posture: telling sitting from standing by the tilt of one window is the error every
model makes, while getting up and sitting down are movements a window sees well. A transition window is
shown as the posture it leads to (the new label comes with the movement, not after it); a moving label
(walking, stairs) clears the posture; LAYING is always the model's own. The decision names the transition.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy is imported where it is used: `har-edge --help` reads the defaults here without it
    import numpy as np

UNCERTAIN = "uncertain"
METHODS = ("average", "vote", "none")
# HAPT's postural transitions (activities 7-12) and the posture each one leads to.
TRANSITION_POSTURE = {"STAND_TO_SIT": "SITTING", "SIT_TO_STAND": "STANDING", "SIT_TO_LIE": "LAYING",
                      "LIE_TO_SIT": "SITTING", "STAND_TO_LIE": "LAYING", "LIE_TO_STAND": "STANDING"}
HELD_POSTURES = ("SITTING", "STANDING")  # the pair a recognised transition decides between
STATIC = ("SITTING", "STANDING", "LAYING")


class SmoothingConfigError(ValueError):
    """Inconsistent smoothing settings."""


@dataclass(frozen=True)
class SmoothingConfig:
    # Default: no smoothing and no "uncertain" floor. Chosen by the streamed cross-validation, per fold on the
    # other folds' users (scripts/streamed_cv.py --choose-smoothing, docs/results.md "Honest streamed accuracy"):
    # the errors are whole bouts, which averaging does not fix, while it and the floor delay every new label.
    method: str = "none"
    n: int = 3  # recent windows considered (the current one included); 3 windows = 2.56 s of new data
    k: int = 2  # votes the winner needs (method "vote")
    threshold: float = 0.0  # confidence below this -> "uncertain" (0 disables)
    transition_threshold: float = 0.5  # transition probability mass that sets the posture (transition models)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise SmoothingConfigError(f"smoothing method {self.method!r} unknown; choose one of {', '.join(METHODS)}")
        if self.n < 1:
            raise SmoothingConfigError(f"smoothing over n={self.n} windows: n must be >= 1")
        if self.method == "vote" and not 1 <= self.k <= self.n:
            raise SmoothingConfigError(f"k-of-n voting needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 0.0 <= self.threshold <= 1.0:
            raise SmoothingConfigError(f"confidence threshold {self.threshold} must lie in [0, 1]")
        if not 0.0 < self.transition_threshold <= 1.0:
            raise SmoothingConfigError(f"transition threshold {self.transition_threshold} must lie in (0, 1]")


@dataclass(frozen=True)
class Decision:
    label: str  # after smoothing and threshold: a class name or "uncertain"
    raw_label: str  # argmax of this window alone
    confidence: float  # confidence of the smoothed decision (see module doc)
    transition: str | None = None  # the postural transition this window was recognised as (transition models)


class LabelSmoother:
    """Causal smoothing of window probabilities; `reset()` after a gap or reconnect."""

    def __init__(self, classes: list[str] | tuple[str, ...], config: SmoothingConfig = SmoothingConfig()):
        if len(classes) < 2:
            raise SmoothingConfigError(f"need at least two classes, got {list(classes)}")
        self.all_classes = tuple(classes)
        # Transition outputs are read for the posture; labels are the activities (every other class).
        self._transition = [i for i, c in enumerate(classes) if c in TRANSITION_POSTURE]  # indices
        self._activity = [i for i, c in enumerate(classes) if c not in TRANSITION_POSTURE]
        self.classes = tuple(classes[i] for i in self._activity)
        self.config = config
        self._history: deque[list[float]] = deque(maxlen=config.n)  # each: the activities' probabilities
        self.posture: str | None = None  # set by a recognised transition

    def reset(self) -> None:
        self._history.clear()
        self.posture = None

    def push(self, probs: np.ndarray | list[list[float]]) -> list[Decision]:
        """probs (k, C) of consecutive windows (an array, or k lists of C floats) -> one Decision per window."""
        # A handful of classes over a few windows: plain Python lists beat numpy's per-call cost.
        rows = probs.tolist() if hasattr(probs, "tolist") else probs
        if any(not isinstance(row, list) or len(row) != len(self.all_classes) for row in rows):
            shape = getattr(probs, "shape", None) or [len(row) if isinstance(row, list) else row for row in rows]
            raise SmoothingConfigError(f"probabilities must have shape (k, {len(self.all_classes)}), got {shape}")
        if not self._transition:
            return [self._decide(p) for p in rows]
        return [self._decide_with_transitions(p) for p in rows]

    def _decide_with_transitions(self, p: list[float]) -> Decision:
        transition = [p[i] for i in self._transition]  # (6,)
        activity = [p[i] for i in self._activity]  # (6,)
        mass = sum(activity)
        decision = self._decide([a / mass for a in activity] if mass > 0 else activity)
        if sum(transition) > self.config.transition_threshold:  # a posture change: show where it leads
            seen = self.all_classes[self._transition[argmax(transition)]]
            self.posture = TRANSITION_POSTURE[seen]
            return Decision(self.posture, decision.raw_label, sum(transition), seen)
        label, confidence = decision.label, decision.confidence
        if label not in STATIC and label != UNCERTAIN:
            self.posture = None  # moving: the next posture is the model's to read
        elif self.posture in HELD_POSTURES and label in HELD_POSTURES + (UNCERTAIN,) and label != self.posture:
            index = self.classes.index(self.posture)
            label = self.posture
            confidence = sum(h[index] for h in self._history) / len(self._history)
        return Decision(label, decision.raw_label, confidence)

    def _decide(self, p: list[float]) -> Decision:
        self._history.append(p)
        classes, cfg = self.classes, self.config
        raw_index = argmax(p)
        if cfg.method == "none":
            index, confidence = raw_index, p[raw_index]
        elif cfg.method == "average":
            mean = [sum(column) / len(self._history) for column in zip(*self._history)]  # (C,)
            index = argmax(mean)
            confidence = mean[index]
        else:  # vote
            votes = [0] * len(classes)
            for h in self._history:
                votes[argmax(h)] += 1
            index = argmax(votes)  # ties: the lower class index, deterministic
            confidence = sum(h[index] for h in self._history) / len(self._history)
            if votes[index] < cfg.k:
                return Decision(UNCERTAIN, classes[raw_index], confidence)
        label = classes[index] if confidence >= cfg.threshold else UNCERTAIN
        return Decision(label, classes[raw_index], confidence)


def argmax(values: Sequence[float]) -> int:
    """Index of the largest value; the first one on ties (like np.argmax)."""
    return max(range(len(values)), key=values.__getitem__)


def softmax_rows(logits: list[list[float]]) -> list[list[float]]:
    """`softmax` of k rows of C logits in Python floats, for the live path's one window at a time (numpy's
    per-call cost is most of its time there): the same operations in the same order, exp from the same C
    library, so the same bits where numpy has no vector exp of its own for float64 (x86 without AVX-512,
    Arm); tests/test_lean.py checks it against `softmax`."""
    rows = []
    for row in logits:
        top = max(row)
        e = [math.exp(value - top) for value in row]
        total = sum(e)
        rows.append([value / total for value in e])
    return rows


def round6(values: list[float]) -> list[float]:
    """np.round(values, 6) in Python floats (numpy's steps: times 1e6, round half to even, divided by 1e6):
    the probabilities as a window result gives them."""
    return [round(value * 1e6) / 1e6 for value in values]


def softmax(logits: np.ndarray) -> np.ndarray:
    """(k, C) logits -> (k, C) probabilities, float64, numerically safe."""
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    probs: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return probs
