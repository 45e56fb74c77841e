"""Sitting or standing, read against the session's own postures while the mount reference is not trusted.

Why. Before a session's walking has checked the mount reference (edge/mount.py), a static window is read
either unrotated or rotated by a reference carried from an earlier session, and sitting and standing are
then told apart by the board's absolute tilt: wrong for whole bouts when the wearer or the mounting
differs from the training wearers (docs/results.md, "Where the errors are"). What does not depend on the
mounting is the *change* between the two: sitting tilts the pelvis back, so within one session the board's
gravity moves the same way, by 5-45 degrees, from every standing bout to every sitting bout (41 of 42 HAPT
recordings of the training users).

How. Each window's gravity direction (board frame, as cut) is projected on `direction`, the mean
standing -> sitting change of the training wearers, as an angle s (degrees). The session keeps the s of
every untrusted window the model calls SITTING or STANDING, in a fixed histogram (memory and time per
window bounded whatever the session's length). Once those windows span at least `gate_deg` between the
session's low and high quantiles, and the model itself calls at least `min_share` of the low end STANDING
and of the high end SITTING (both postures have been seen), the window is read by where it lies between
them: SITTING when `weights . (s - low, high - s) + bias > 0`, else STANDING; the model's two
scores are swapped where it said the other. Until then, and for every window the checked reference
aligns, the model decides alone. The parameters are fitted on training wearers' streams
(scripts/streamed_cv.py --posture) and travel in the bundle (docs/BUNDLE.md, "posture").
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.postprocess import argmax

SITTING, STANDING = "SITTING", "STANDING"
BIN_DEG = 0.25  # histogram resolution of s; the quantiles are exact to this
_BINS = int(round(180 / BIN_DEG))  # s in [-90, 90] degrees


class PostureError(ValueError):
    """A posture description that cannot be used (named, with what to do)."""


@dataclass(frozen=True)
class PostureConfig:
    direction: tuple[float, float, float]  # unit, board frame: the training wearers' standing -> sitting change
    quantile: float                        # percent: the session's low / high reference points (and 100 - it)
    gate_deg: float                        # the rule reads a window only once high - low reaches this
    weights: tuple[float, float]           # on (s - low, high - s), degrees
    bias: float
    min_share: float = 0.5                 # the guard (model_agrees): 0 turns it off

    def __post_init__(self) -> None:
        direction = np.asarray(self.direction, dtype=np.float64)
        numbers = [*np.ravel(direction), self.quantile, self.gate_deg, *self.weights, self.bias]
        if direction.shape != (3,) or len(self.weights) != 2 or not all(math.isfinite(float(v)) for v in numbers) \
                or np.linalg.norm(direction) < 1e-6 or not 0 < self.quantile < 50 or self.gate_deg < 0 \
                or not 0 <= self.min_share <= 1:
            raise PostureError(f"posture direction {self.direction!r} must be three finite numbers not all 0, "
                               f"quantile {self.quantile} in (0, 50), gate_deg {self.gate_deg} >= 0, "
                               f"weights {self.weights!r} two finite numbers, min_share {self.min_share} in [0, 1]")
        object.__setattr__(self, "direction", tuple(float(v) for v in direction / np.linalg.norm(direction)))
        object.__setattr__(self, "weights", tuple(float(v) for v in self.weights))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"direction": list(self.direction), "weights": list(self.weights)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "posture") -> PostureConfig:
        try:
            return cls(tuple(float(v) for v in data["direction"]), float(data["quantile"]),  # type: ignore[arg-type]
                       float(data["gate_deg"]), tuple(float(v) for v in data["weights"]),  # type: ignore[arg-type]
                       float(data["bias"]), float(data.get("min_share", 0.5)))
        except (KeyError, TypeError, ValueError) as exc:
            raise PostureError(f"{where}: not a posture description ({exc}); expected "
                               '{"direction": [x, y, z], "quantile": q, "gate_deg": g, "weights": [a, b], '
                               '"bias": c}') from None


def tilt_deg(gravity: Sequence[Sequence[float]] | np.ndarray, direction: Sequence[float] | np.ndarray) -> list[float]:
    """k unit gravity directions (k, 3) -> their angle s towards `direction` (3,), degrees in [-90, 90].

    In Python floats, a window at a time: the runtime reads one window per hop, where numpy's per-call cost
    would be most of the time; the fitting (training/posture.py) calls the same function, so it sees the
    runtime's tilts to the bit (tests/test_posture.py checks them against numpy's arcsin of the dot product)."""
    dx, dy, dz = (float(v) for v in direction)
    rows = gravity.tolist() if isinstance(gravity, np.ndarray) else gravity
    return [math.degrees(math.asin(max(-1.0, min(1.0, gx * dx + gy * dy + gz * dz)))) for gx, gy, gz in rows]


class SessionPostures:
    """One session's static postures (explicit state: a histogram of s) and the rule that reads them."""

    def __init__(self, config: PostureConfig, classes: tuple[str, ...]) -> None:
        self.config = config
        self.sit, self.stand = classes.index(SITTING), classes.index(STANDING)
        # The histogram kept cumulative, so that a quantile is one search and the guard's sums are lookups:
        # row 0, the untrusted sit/stand windows with s in bins <= b; row 1, those of them the model called SITTING.
        self._cumulative = np.zeros((2, _BINS), np.int64)  # (2, B)
        self._n = 0
        self.read = 0  # windows the rule read (its gate and guard open): counters
        self.swapped = 0  # ... and of those, the ones whose label it changed

    def quantiles(self) -> tuple[float, float]:
        """(low, high): the session's `quantile` and 100 - `quantile` percent points of s (bin centres)."""
        q = self.config.quantile / 100
        low, high = np.searchsorted(self._cumulative[0], (q * self._n, (1 - q) * self._n), side="left").tolist()
        return (low + 0.5) * BIN_DEG - 90.0, (high + 0.5) * BIN_DEG - 90.0  # the first bins reaching them

    def observe(self, s: float, model_sitting: bool) -> tuple[float, float]:
        """One untrusted sit/stand window's s joins the session -> the session's (low, high) with it."""
        b = min(_BINS - 1, max(0, int((s + 90.0) / BIN_DEG)))
        if model_sitting:
            self._cumulative[:, b:] += 1
        else:
            self._cumulative[0, b:] += 1
        self._n += 1
        return self.quantiles()

    def model_agrees(self, low: float, high: float) -> bool:
        """The guard: the model itself calls at least `min_share` of the session's low end (within gate_deg / 2
        of it) STANDING and of its high end SITTING, i.e. it sees both postures in the session. Without it a
        session seated throughout on different chairs has its most upright sitting read as standing (measured:
        scripts/streamed_cv.py --posture, one-posture sessions)."""
        if self.config.min_share <= 0:
            return True
        low_n, low_sit, high_n, high_sit = self.end_counts(low, high)
        share = self.config.min_share
        return low_n - low_sit >= share * low_n and high_sit >= share * high_n

    def end_counts(self, low: float, high: float) -> tuple[int, int, int, int]:
        """The guard's counts: windows within gate_deg / 2 of the low end and of those the model called
        SITTING, then the same of the high end (from the cumulative histogram: lookups, not sums)."""
        margin = int(self.config.gate_deg / 2 / BIN_DEG)
        lo, hi = int((low + 90.0) / BIN_DEG), int((high + 90.0) / BIN_DEG)
        windows, sitting = self._cumulative  # (B,) each
        top = min(_BINS - 1, lo + margin)  # the low end: bins 0 .. lo + margin
        below = hi - margin - 1  # the high end: bins hi - margin .. B - 1
        high_n = self._n - (int(windows[below]) if below >= 0 else 0)
        high_sit = int(sitting[-1]) - (int(sitting[below]) if below >= 0 else 0)
        return int(windows[top]), int(sitting[top]), high_n, high_sit

    def opens(self, low: float, high: float) -> bool:
        """The rule reads the window just observed: the session spans the gate and the guard holds."""
        return high - low >= self.config.gate_deg and self.model_agrees(low, high)

    def candidates(self, logits: Sequence[Sequence[float]] | np.ndarray,
                   trusted: Sequence[bool] | np.ndarray) -> list[int]:
        """(k, C), (k,) -> indices of the windows the rule reads: untrusted, and the model says SITTING or STANDING."""
        rows = logits.tolist() if isinstance(logits, np.ndarray) else logits
        flags = trusted.tolist() if isinstance(trusted, np.ndarray) else trusted
        return [i for i, (row, checked) in enumerate(zip(rows, flags))
                if not checked and argmax(row) in (self.sit, self.stand)]

    def decide(self, logits: np.ndarray, gravity: Sequence[Sequence[float]] | np.ndarray,
               trusted: Sequence[bool] | np.ndarray) -> np.ndarray:
        """logits (k, C), gravity (k, 3) unit directions as cut, trusted (k,) bool: rotated by a reference the
        session's walking checked -> logits (k, C), SITTING and STANDING swapped where the rule reads the other
        (the same array when nothing is swapped). Windows in stream order: each one's s joins the session
        before it is read. Plain Python per window (the live path has one): tests/test_posture.py checks it
        against the rule written with numpy."""
        rows = logits.tolist()  # k lists of C floats
        idx = self.candidates(rows, trusted)
        if not idx:
            return logits  # nothing for the rule: no copy, no tilt
        directions = gravity.tolist() if isinstance(gravity, np.ndarray) else gravity
        out = logits
        s = tilt_deg([directions[i] for i in idx], self.config.direction)
        w_low, w_high = self.config.weights
        for i, tilt in zip(idx, s):
            said_sitting = argmax(rows[i]) == self.sit
            low, high = self.observe(tilt, said_sitting)
            if not self.opens(low, high):
                continue  # one posture so far: nothing to read it against
            self.read += 1
            sitting = w_low * (tilt - low) + w_high * (high - tilt) + self.config.bias > 0
            if sitting != said_sitting:
                if out is logits:
                    out = np.array(logits, copy=True)  # (k, C)
                out[i, [self.sit, self.stand]] = out[i, [self.stand, self.sit]]
                self.swapped += 1
        return out
