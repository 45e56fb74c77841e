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

Rises. A sit <-> stand transition moves the waist down or up by 0.25-0.45 m, which no mounting changes: the
vertical is the gravity the board measures itself. `RiseTracker` finds each short movement between two still
stretches and integrates the acceleration along the vertical (the gravity direction carried through the movement
by the gyro) twice, with zero velocity at both still ends -> the rise in metres. One of 0.15 m or more, with a
turn of the gravity smaller than lying makes (a sit <-> stand transition), does two things: the still stretch
after it is SITTING (it went down) or STANDING (up), until the next movement other than a fidget; and the session
has shown both postures, so the histogram rule reads its windows without waiting for the model to agree (the
guard is for sessions of one posture, which show no such rise). The gravity directions the rise saw are not used
as references: a wearer's second sitting, after lying, can lie nearer their standing (docs/results.md, "Rises").
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge.mount import Vector3, angle_deg
from edge.postprocess import argmax

SITTING, STANDING = "SITTING", "STANDING"
STATIC_CLASSES = (SITTING, STANDING, "LAYING")
# A still window lying further than this from both stretches of the session's last sit <-> stand rise is lying down:
# on the 21 training users' still windows after a rise, sitting lies at most 34.9 degrees from the nearer of the
# two, standing 8.9, lying at least 41.2 (docs/results.md, "Rises"); half-way between.
LYING_DEG = 38.0
LYING_COS = math.cos(math.radians(LYING_DEG))
# Never still: none of the 3,122 walking windows of the 21 training users is still by RiseTracker's test (both
# hops), 88% of their static windows are.
MOVING_CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS")
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


# A rise (see the module's docstring). Chosen on the labelled postural transitions of the 21 training users
# (HAPT labels 7-12) and the windows the rises hold, not on any accuracy (docs/results.md, "Rises"): of the 86
# labelled sit <-> stand transitions, 59 give a rise with the right sign, none a wrong one, no transition to or
# from lying gives one, 2 come where nothing is labelled, and all 807 labelled windows held are the posture named.
# Looser settings (stiller stretches, longer movements, larger turns) found up to 70 but named wrong ones.
STILL_GYRO_RAD_S = 0.15  # a still hop: RMS of the gyro's norm below this ...
STILL_ACC_G = 0.03       # ... and the norm of the total acceleration's per-axis spread below this
MAX_MOVING_HOPS = 4      # a movement between two still hops longer than this (5.1 s at 50 Hz) is not a transition
RISE_MIN_M = 0.15        # a sit <-> stand transition: the waist moves at least this ...
RISE_TURN_DEG = (3.0, 55.0)  # ... and the gravity turns by more than the first and less than lying does
FIDGET_TURN_DEG = 5.0  # a movement turning the gravity less than this (and no rise) keeps the posture named
RISE_MAX_MISS_DEG = 6.0  # ... and the gyro's vertical ends this near the gravity measured after (real ones: <= 4.6)


@dataclass(frozen=True)
class Rise:
    """One movement between two still stretches: how far the waist rose and the two stretches' gravity."""
    metres: float       # > 0: the second stretch is higher (sitting -> standing)
    turn_deg: float     # the angle between the two stretches' gravity directions
    miss_deg: float     # the angle between the vertical carried by the gyro and the one measured after
    before: Vector3     # unit gravity direction of the still hop before the movement, board frame as cut
    after: Vector3      # ... and of the still hop after it

    @property
    def sit_stand(self) -> bool:
        """A sit <-> stand transition (not a fidget, not lying down or getting up from lying)."""
        return abs(self.metres) >= RISE_MIN_M and RISE_TURN_DEG[0] <= self.turn_deg <= RISE_TURN_DEG[1] \
            and self.miss_deg <= RISE_MAX_MISS_DEG


@dataclass(frozen=True)
class RiseState:
    """What the rise tracker says of one window."""
    rise: Rise | None = None     # the movement that ended in this window, if one did
    holding: str | None = None   # SITTING / STANDING: the window lies in the stretch a sit <-> stand rise named
    still: bool = False          # every hop of the window is still: not walking, whatever the model says


NO_RISE = RiseState()
STILL = RiseState(still=True)


def _unit3(v: Sequence[float]) -> Vector3:
    n = math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])
    return (v[0] / n, v[1] / n, v[2] / n)


def waist_rise(acc: np.ndarray, gyro: np.ndarray, pre: int, post: int,
               rate_hz: float) -> tuple[float, float, float]:
    """acc (n, 3) total acceleration (g), gyro (n, 3) rad/s, both in the board frame, still for the first `pre`
    and the last `post` samples -> (metres the waist rose, degrees the gravity turned, degrees between the
    vertical the gyro carried to the end and the one measured there: a few for a real movement, large where
    the stream was spliced or the gyro is off).

    The vertical starts as the first still stretch's mean acceleration and is carried through the movement by
    the gyro (a world vector seen from a body turning at w: du/dt = u x w, one Rodrigues step per sample); the
    specific force along it, less the gravity the board reads there (its reading drifts with the board's
    orientation by a few per cent, so it goes from the first stretch's magnitude to the last's as the vertical
    turns), integrated to a velocity made zero at both ends (both stretches are still), and again to the
    rise: the mean height of the last stretch. Plain Python floats: a few hundred samples, once per movement."""
    dt = 1.0 / rate_hz
    a, w = acc.tolist(), gyro.tolist()
    first = acc[:pre].mean(axis=0).tolist()
    last = acc[-post:].mean(axis=0).tolist()
    g0, g1 = math.sqrt(sum(v * v for v in first)), math.sqrt(sum(v * v for v in last))
    ux, uy, uz = (v / g0 for v in first)
    x0, y0, z0 = ux, uy, uz
    force, turned, ends = [], [], []
    for i, ((ax, ay, az), (wx, wy, wz)) in enumerate(zip(a, w)):
        if i >= len(a) - post:
            ends.append((ux, uy, uz))
        force.append(ax * ux + ay * uy + az * uz)
        turned.append(math.acos(max(-1.0, min(1.0, ux * x0 + uy * y0 + uz * z0))))
        theta = math.sqrt(wx * wx + wy * wy + wz * wz) * dt
        if theta > 0:
            kx, ky, kz = wx * dt / theta, wy * dt / theta, wz * dt / theta
            c, s = math.cos(theta), math.sin(theta)
            dot = (kx * ux + ky * uy + kz * uz) * (1 - c)
            ux, uy, uz = (ux * c - (ky * uz - kz * uy) * s + kx * dot,
                          uy * c - (kz * ux - kx * uz) * s + ky * dot,
                          uz * c - (kx * uy - ky * ux) * s + kz * dot)
    total = sum(turned[-post:]) / post or 1e-9
    velocity, v = [], 0.0
    for f, angle in zip(force, turned):
        v += (f - (g0 + (g1 - g0) * min(1.0, angle / total))) * 9.80665 * dt  # m/s
        velocity.append(v)
    n, drift, height, heights = len(velocity), velocity[-1], 0.0, []
    for i, v in enumerate(velocity):
        height += (v - drift * i / (n - 1)) * dt
        heights.append(height)
    carried = [sum(u[j] for u in ends) for j in range(3)]  # the gyro's vertical over the last stretch
    return sum(heights[-post:]) / post, angle_deg(first, last), angle_deg(carried, last)


def still_statistics(hop: np.ndarray) -> tuple[float, float]:
    """hop (h, 9) channels as cut -> (RMS of the gyro's norm in rad/s, norm of the total acceleration's per-axis
    standard deviation in g): the still test's two numbers, from one sum and one sum of squares in float64 (5.6
    against 18 us for numpy's mean / std on the float32 hop; tests/test_posture.py checks them against those)."""
    a = hop[:, 3:9].astype(np.float64)  # (h, 6) gyro, total acc
    squares, sums, n = np.einsum("ij,ij->j", a, a).tolist(), a.sum(axis=0).tolist(), len(hop)
    spread = sum(max(0.0, squares[j] / n - (sums[j] / n) ** 2) for j in (3, 4, 5))  # the three variances
    return math.sqrt((squares[0] + squares[1] + squares[2]) / n), math.sqrt(spread)


class RiseTracker:
    """A stream's still stretches and the movements between them (explicit state), a window's new samples at
    a time: `push` says of each window the rise a movement ending in it makes and the posture it holds."""

    def __init__(self, rate_hz: float, window: int, hop: int) -> None:
        self.rate_hz, self.window, self.hop = rate_hz, window, hop
        self.reset()

    def reset(self) -> None:
        """A new segment: nothing before it is continuous with what follows."""
        self._last_end: int | None = None
        self._before: np.ndarray | None = None  # (hop, 9): the last still hop
        self._moving: list[np.ndarray] = []     # hops (hop, 9) since it
        self._holding: str | None = None        # the posture the last sit <-> stand rise named, while it holds
        self._still_hops = 0                    # still hops in a row, up to this one

    def push(self, window: np.ndarray, end: int) -> RiseState:
        """window (128, 9) un-normalized channels as cut, ending at `end` (since the segment's start)."""
        new = self.window if self._last_end is None else end - self._last_end
        if not 0 < new <= self.window:  # not the next window on the grid: start over
            self.reset()
            new = self.window
        self._last_end = end
        rise = None
        for start in range(self.window - new, self.window, self.hop):
            rise = self._push_hop(window[start:start + self.hop]) or rise
        still = self._still_hops * self.hop >= self.window
        if rise is None and self._holding is None:
            return STILL if still else NO_RISE  # the common cases: no allocation
        return RiseState(rise, self._holding, still)

    def _push_hop(self, hop: np.ndarray) -> Rise | None:
        """-> the rise of a movement this still hop ends, if it is one."""
        gyro_rms, acc_spread = still_statistics(hop)
        still = gyro_rms < STILL_GYRO_RAD_S and acc_spread < STILL_ACC_G
        self._still_hops = self._still_hops + 1 if still else 0
        if not still:
            if self._before is not None:
                self._moving.append(hop)
                if len(self._moving) > MAX_MOVING_HOPS:  # walking, or a long fidget: no posture change to read
                    self._before, self._moving, self._holding = None, [], None
            else:
                self._holding = None
            return None
        rise = None
        if self._before is not None and self._moving:
            span = np.concatenate([self._before, *self._moving, hop]).astype(np.float64)  # (n, 9)
            metres, turn, miss = waist_rise(span[:, 6:9], span[:, 3:6], len(self._before), len(hop), self.rate_hz)
            rise = Rise(metres, turn, miss, _unit3(self._before[:, 6:9].mean(axis=0).tolist()),
                        _unit3(hop[:, 6:9].mean(axis=0).tolist()))
            if rise.sit_stand:
                self._holding = STANDING if metres > 0 else SITTING
            elif turn > FIDGET_TURN_DEG or abs(metres) >= RISE_MIN_M:
                self._holding = None  # some other posture change (to or from lying, a splice): not named
        self._before, self._moving = hop, []
        return rise


class SessionPostures:
    """One session's static postures (explicit state: a histogram of s) and the rule that reads them."""

    def __init__(self, config: PostureConfig, classes: tuple[str, ...], rises: bool = True) -> None:
        self.config = config
        self.use_rises = rises  # False: the histogram rule alone (to measure what the rises add)
        self.sit, self.stand = classes.index(SITTING), classes.index(STANDING)
        self.static = [classes.index(c) for c in STATIC_CLASSES if c in classes]
        self.moving = {classes.index(c) for c in MOVING_CLASSES if c in classes}
        # The histogram kept cumulative, so that a quantile is one search and the guard's sums are lookups:
        # row 0, the untrusted sit/stand windows with s in bins <= b; row 1, those of them the model called SITTING.
        self._cumulative = np.zeros((2, _BINS), np.int64)  # (2, B)
        self._n = 0
        self.read = 0  # windows the rule read (its gate and guard open): counters
        self.swapped = 0  # ... and of those, the ones whose label it changed
        self.rises = 0  # sit <-> stand transitions seen (one opens the guard for the rest of the session)
        self.stilled = 0  # still windows the model called walking, given its best static class instead
        self.relaid = 0   # still windows given LAYING, or taken from it, by their angle to the session's upright
        self.lying = classes.index("LAYING") if "LAYING" in classes else None
        self.upright: tuple[Vector3, ...] = ()  # the last sit <-> stand rise's two stretches' gravity

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
        """The rule reads the window just observed: the session spans the gate and has shown both postures (a
        sit <-> stand rise, or the guard: the model agrees)."""
        return high - low >= self.config.gate_deg and (self.rises > 0 or self.model_agrees(low, high))

    def candidates(self, logits: Sequence[Sequence[float]] | np.ndarray,
                   trusted: Sequence[bool] | np.ndarray) -> list[int]:
        """(k, C), (k,) -> indices of the windows the rule reads: untrusted, and the model says SITTING or STANDING."""
        rows = logits.tolist() if isinstance(logits, np.ndarray) else logits
        flags = trusted.tolist() if isinstance(trusted, np.ndarray) else trusted
        return [i for i, (row, checked) in enumerate(zip(rows, flags))
                if not checked and argmax(row) in (self.sit, self.stand)]

    def learn(self, state: RiseState) -> None:
        if state.rise is not None and state.rise.sit_stand and self.use_rises:
            self.rises += 1
            self.upright = (state.rise.before, state.rise.after)  # a sitting and a standing gravity of the session

    def decide(self, logits: np.ndarray, gravity: Sequence[Sequence[float]] | np.ndarray,
               trusted: Sequence[bool] | np.ndarray, rises: Sequence[RiseState] = ()) -> np.ndarray:
        """logits (k, C), gravity (k, 3) unit directions as cut, trusted (k,) bool: rotated by a reference the
        session's walking checked, rises (k,) what RiseTracker said of each window (or nothing) -> logits
        (k, C), SITTING and STANDING swapped where the rule reads the other (the same array when nothing is
        swapped). Windows in stream order: each one's rise is counted and its s joins the session before it is
        read; a window in a stretch a rise named is that posture, any other by the histogram rule. Plain Python
        per window (the live path has one): tests/test_posture.py checks it against the rule written with numpy."""
        if not any(state.rise is not None for state in rises):  # the common case: no rise in these windows
            return self._decide(logits, gravity, trusted, rises)
        parts, start = [], 0
        for i, state in enumerate(rises):  # split at each rise: it counts from its own window on
            if state.rise is not None:
                parts.append(self._decide(logits[start:i], gravity[start:i], trusted[start:i], rises[start:i]))
                self.learn(state)
                start = i
        parts.append(self._decide(logits[start:], gravity[start:], trusted[start:], rises[start:]))
        return np.concatenate(parts)

    def read_still(self, logits: np.ndarray, gravity: Sequence[Sequence[float]],
                   trusted: Sequence[bool] | np.ndarray, rises: Sequence[RiseState]) -> np.ndarray:
        """logits (k, C) -> (k, C), for the untrusted still windows: one the model calls a walking class gets its
        best static class instead (the board did not move); and once a rise has shown the session's upright
        gravity, one lying more than LYING_DEG from both of its stretches is LAYING, one lying nearer is not (the
        best of SITTING / STANDING). The class chosen has its score swapped with the model's top one."""
        if not self.use_rises or not rises or not self.static:
            return logits
        out = logits
        for i, (state, checked) in enumerate(zip(rises, trusted)):
            if not state.still or checked:
                continue
            row = out[i].tolist()
            top, best = argmax(row), None
            if top in self.moving:
                best = max(self.static, key=row.__getitem__)
                self.stilled += 1
            if self.upright and self.lying is not None:
                gx, gy, gz = gravity[i]
                nearest = max(ux * gx + uy * gy + uz * gz for ux, uy, uz in self.upright)  # cos of the least angle
                lying, now = nearest < LYING_COS, best if best is not None else top
                if lying != (now == self.lying):
                    best = self.lying if lying else (self.sit if row[self.sit] > row[self.stand] else self.stand)
                    self.relaid += 1
            if best is not None and best != top:
                if out is logits:
                    out = np.array(logits, copy=True)  # (k, C)
                out[i, [top, best]] = out[i, [best, top]]
        return out

    def _decide(self, logits: np.ndarray, gravity: Sequence[Sequence[float]] | np.ndarray,
                trusted: Sequence[bool] | np.ndarray, rises: Sequence[RiseState]) -> np.ndarray:
        directions = gravity.tolist() if isinstance(gravity, np.ndarray) else gravity
        logits = self.read_still(logits, directions, trusted, rises)
        rows = logits.tolist()  # k lists of C floats
        idx = self.candidates(rows, trusted)
        if not idx:
            return logits  # nothing for the rule: no copy, no tilt
        out = logits
        s = tilt_deg([directions[i] for i in idx], self.config.direction)
        w_low, w_high = self.config.weights
        holding = [state.holding if self.use_rises else None for state in rises] or [None] * len(rows)
        for i, tilt in zip(idx, s):
            said_sitting = argmax(rows[i]) == self.sit
            low, high = self.observe(tilt, said_sitting)
            if holding[i] is not None:
                sitting = holding[i] == SITTING  # the stretch a sit <-> stand rise named
            elif self.opens(low, high):
                sitting = w_low * (tilt - low) + w_high * (high - tilt) + self.config.bias > 0
            else:
                continue  # one posture so far: nothing to read it against
            self.read += 1
            if sitting != said_sitting:
                if out is logits:
                    out = np.array(logits, copy=True)  # (k, C)
                out[i, [self.sit, self.stand]] = out[i, [self.stand, self.sit]]
                self.swapped += 1
        return out
