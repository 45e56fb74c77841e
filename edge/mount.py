"""Mount alignment: undo how the wearer's board sits on the body before the model sees a window.

Why: every HAPT user wears the phone on the waist at a slightly different angle (their gravity direction
while walking differs by up to 21 degrees from the users' mean). Sitting and standing differ mainly by the
tilt of the pelvis, a few to 30 degrees, so a mount tilted by a few degrees turns one user's standing into
everyone's sitting: the errors left after training were whole-user biases of exactly this kind.

How: while the wearer moves (walks, climbs stairs), the torso is upright; the mean gravity direction of
those windows is the mount's *reference*. The rotation that takes the reference onto a fixed *canonical*
direction (the training wearers' mean) is applied to every window's three triplets (body_acc, body_gyro,
total_acc), so the model sees every wearer as if mounted the same way. No labels are needed: a window
counts as moving when its body-acceleration RMS exceeds `moving_rms_g` (HAPT: every walking window is
above 0.18 g, the median static one at 0.01 g) and its gravity direction turns by less than
`max_turn_deg` from its first to its last 16 samples. The second test keeps out posture changes (sitting
down, lying down: large body_acc while the 0.3 Hz gravity filter catches up, gravity turning by tens of
degrees); 99% of HAPT's walking windows turn by less than 10 degrees.

Offline (training, evaluation) each wearer's reference comes from all of their moving windows
(`reference_direction`); online, `MountCalibration` builds it from the stream and can be saved per
wearer, so the next session starts calibrated. numpy only (runs on the device; the rotation is Rodrigues'
formula, checked against scipy.spatial.transform.Rotation in the tests: importing scipy.spatial costs the
device more than all of this module's arithmetic).
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from edge.paths import write_text_atomically

# What to do with a file given as a calibration that is none: it may be another file of the wearer's (a profile,
# a recording), which deleting would lose.
NOT_A_CALIBRATION = ("give --mount-calibration the calibration's own file, or a new file name to calibrate afresh "
                     "(delete this one only if it is an old calibration)")

TRIPLETS = (slice(0, 3), slice(3, 6), slice(6, 9))  # body_acc, body_gyro, total_acc (frontend.CHANNELS)


class MountError(ValueError):
    """A mount configuration or calibration file that cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class MountConfig:
    canonical: tuple[float, float, float]  # unit gravity direction while moving, mean of the training wearers
    moving_rms_g: float = 0.2              # a window is "moving" when its body_acc RMS magnitude exceeds this (g)
    max_turn_deg: float = 10.0             # ... and its gravity direction turns less than this across the window
    min_windows: int = 20                  # moving windows (about 25 s) before an online reference is trusted

    def __post_init__(self) -> None:
        canonical = np.asarray(self.canonical, dtype=np.float64)
        if canonical.shape != (3,) or not np.all(np.isfinite(canonical)) or np.linalg.norm(canonical) < 1e-6:
            raise MountError(f"mount canonical direction {self.canonical!r} must be three finite numbers, not all 0")
        if not self.moving_rms_g > 0 or not 0 < self.max_turn_deg <= 180 or int(self.min_windows) < 1:
            raise MountError(f"mount moving_rms_g={self.moving_rms_g} must be > 0, max_turn_deg={self.max_turn_deg} "
                             f"in (0, 180] and min_windows={self.min_windows} >= 1")
        object.__setattr__(self, "canonical", tuple(float(v) for v in canonical / np.linalg.norm(canonical)))
        object.__setattr__(self, "min_windows", int(self.min_windows))

    @property
    def max_turn_cos(self) -> float:
        """cos(max_turn_deg): `moving` compares cosines (no arccos per window)."""
        return math.cos(math.radians(self.max_turn_deg))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"canonical": list(self.canonical)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "mount") -> MountConfig:
        try:
            return cls(canonical=tuple(data["canonical"]), moving_rms_g=float(data.get("moving_rms_g", 0.2)),
                       max_turn_deg=float(data.get("max_turn_deg", 10.0)), min_windows=int(data.get("min_windows", 20)))
        except (KeyError, TypeError, ValueError) as exc:
            raise MountError(f"{where}: not a mount description ({exc}); expected "
                             '{"canonical": [x, y, z], "moving_rms_g": g, "max_turn_deg": d, "min_windows": n}') from None


# The per-window statistics below are reductions written as matrix products and einsums: on one window
# numpy's per-call cost is most of the time (the live path computes them once per window).

@functools.cache
def _selector(length: int) -> np.ndarray:
    """(3, length) float32 rows summing a window's first 16, last 16 and all samples (shared: read-only)."""
    selector = np.zeros((3, length), np.float32)
    selector[0, :16] = selector[1, -16:] = selector[2] = 1.0
    selector.setflags(write=False)
    return selector


def window_statistics(windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 128, 9) un-normalized windows -> body-acceleration RMS magnitude (N,), and gravity (total_acc -
    body_acc) summed over the first 16, the last 16 and all samples (N, 3, 3) float64, from one matrix product."""
    length = windows.shape[1]
    sums = np.matmul(_selector(length), windows).astype(np.float64)  # (N, 3, 9)
    gravity = sums[..., 6:9] - sums[..., 0:3]  # (N, 3, 3)
    body = windows[:, :, 0:3]
    rms = np.sqrt(np.einsum("ntc,ntc->n", body, body, dtype=np.float64) / length)  # (N,)
    return rms, gravity


def _unit(vectors: np.ndarray) -> np.ndarray:
    """(N, 3) -> (N, 3) unit vectors (a zero vector stays zero)."""
    norm = np.sqrt(np.einsum("nc,nc->n", vectors, vectors))[:, None]  # (N, 1)
    unit: np.ndarray = vectors / np.maximum(norm, 1e-9)
    return unit


def _moving(rms: np.ndarray, gravity: np.ndarray, config: MountConfig) -> np.ndarray:
    first, last = gravity[:, 0], gravity[:, 1]  # (N, 3) each
    norms = np.sqrt(np.einsum("nc,nc->n", first, first) * np.einsum("nc,nc->n", last, last))  # (N,)
    cosine = np.einsum("nc,nc->n", first, last) / np.maximum(norms, 1e-12)  # (N,)
    mask: np.ndarray = (rms > config.moving_rms_g) & (cosine > config.max_turn_cos)
    return mask


Vector3 = tuple[float, float, float]


def moving_directions(windows: np.ndarray, config: MountConfig) -> list[tuple[Vector3, bool]]:
    """`gravity_directions` and `moving` of the online path's few windows at a time (N, 128, 9) -> per window
    its unit mean gravity direction and whether it is moving. The same matrix product and einsum as
    `window_statistics`, the rest in Python floats (numpy's per-call cost is most of the time on one
    window): the same test, and the directions to the last bit or so (tests/test_lean.py)."""
    length = windows.shape[1]
    sums = np.matmul(_selector(length), windows).tolist()  # (N, 3, 9): first 16, last 16, all samples
    body = windows[:, :, 0:3]
    squares = np.einsum("ntc,ntc->n", body, body, dtype=np.float64).tolist()  # (N,)
    out: list[tuple[Vector3, bool]] = []
    for (first, last, whole), square in zip(sums, squares):
        fx, fy, fz = first[6] - first[0], first[7] - first[1], first[8] - first[2]  # gravity = total - body
        lx, ly, lz = last[6] - last[0], last[7] - last[1], last[8] - last[2]
        norms = math.sqrt((fx * fx + fy * fy + fz * fz) * (lx * lx + ly * ly + lz * lz))
        cosine = (fx * lx + fy * ly + fz * lz) / max(norms, 1e-12)
        is_moving = math.sqrt(square / length) > config.moving_rms_g and cosine > config.max_turn_cos
        x, y, z = whole[6] - whole[0], whole[7] - whole[1], whole[8] - whole[2]
        norm = max(math.sqrt(x * x + y * y + z * z), 1e-9)
        out.append(((x / norm, y / norm, z / norm), is_moving))
    return out


def gravity_directions(windows: np.ndarray) -> np.ndarray:
    """(N, 128, 9) un-normalized windows -> (N, 3) unit mean gravity direction (total_acc - body_acc)."""
    return _unit(window_statistics(windows)[1][:, 2])


def moving(windows: np.ndarray, config: MountConfig) -> np.ndarray:
    """(N, 128, 9) -> (N,) bool: body-acceleration RMS above moving_rms_g and gravity turning less than
    max_turn_deg between the window's first and last 16 samples (walking, not a posture change)."""
    return _moving(*window_statistics(windows), config)


def reference_direction(windows: np.ndarray, config: MountConfig) -> np.ndarray | None:
    """One wearer's windows (N, 128, 9) -> unit mean gravity direction of the moving ones, None if none move."""
    rms, gravity = window_statistics(windows)  # (N,), (N, 3, 3)
    mask = _moving(rms, gravity, config)  # (N,)
    if not mask.any():
        return None
    mean = _unit(gravity[mask, 2]).sum(axis=0)  # (3,)
    direction: np.ndarray = mean / np.linalg.norm(mean)
    return direction


def _three(v: ArrayLike) -> Vector3:
    """A 3-vector as three Python floats (a tuple or list without numpy's per-call cost)."""
    if isinstance(v, (tuple, list)) and len(v) == 3:
        x, y, z = v
        return float(x), float(y), float(z)
    x, y, z = np.asarray(v, dtype=np.float64).reshape(3).tolist()
    return x, y, z


def rotation_matrix(rotvec: ArrayLike) -> np.ndarray:
    """(3,) rotation vector (unit axis * angle in radians) -> (3, 3) matrix, by Rodrigues' formula
    R = I + sin(a) K + (1 - cos(a)) K^2, K the cross-product matrix of the unit axis (x, y, z)
    (what scipy's Rotation.from_rotvec(v).as_matrix() gives, to 1e-15). Written out in Python floats:
    nine numbers, where numpy's per-call cost would be most of the time (once per moving live window)."""
    vx, vy, vz = _three(rotvec)
    angle = math.sqrt(vx * vx + vy * vy + vz * vz)
    if angle < 1e-12:
        return np.eye(3)
    x, y, z = vx / angle, vy / angle, vz / angle
    s, c = math.sin(angle), 1.0 - math.cos(angle)
    # K^2 = a a^T - I for a unit axis a: its diagonal is -(1 - x^2) etc., off-diagonal x y etc.
    return np.array([[1.0 - c * (y * y + z * z), c * x * y - s * z, c * x * z + s * y],
                     [c * x * y + s * z, 1.0 - c * (x * x + z * z), c * y * z - s * x],
                     [c * x * z - s * y, c * y * z + s * x, 1.0 - c * (x * x + y * y)]])


def triplet_matrix(rotation: ArrayLike, scale: ArrayLike | None = None, dtype: type = np.float64) -> np.ndarray:
    """(3, 3) R -> (9, 9) block-diagonal M with channels (n, 9) @ M == each triplet rotated (v' = R v), each
    output channel then times `scale` (9,) when given: one matrix product rotates a whole window, and
    normalization folds into it (edge/pipeline.py). The products are float64's, cast to `dtype` once: once per
    moving window (three slice copies and one product: 2.6x less than placing 81 Python floats)."""
    m = np.zeros((9, 9))
    m[0:3, 0:3] = m[3:6, 3:6] = m[6:9, 6:9] = np.asarray(rotation, dtype=np.float64).T  # M[triplet, triplet] = R^T
    if scale is not None:
        m *= np.asarray(scale, dtype=np.float64)  # (9,): column j is output channel j
    return m.astype(dtype, copy=False)


def rotation_onto(reference: ArrayLike, canonical: ArrayLike) -> np.ndarray:
    """(3, 3) the smallest rotation that takes `reference` onto `canonical` (both unit 3-vectors): about
    their common normal by the angle between them (a rotation vector; 10x faster than align_vectors)."""
    rx, ry, rz = _three(reference)
    cx, cy, cz = _three(canonical)
    ax, ay, az = ry * cz - rz * cy, rz * cx - rx * cz, rx * cy - ry * cx  # reference x canonical
    sine = math.sqrt(ax * ax + ay * ay + az * az)  # |axis| = sin(angle)
    angle = math.atan2(sine, rx * cx + ry * cy + rz * cz)
    if sine < 1e-12:  # parallel (or, never on a worn board, opposite): no unique normal
        if angle < 1.0:
            return np.eye(3)
        reference = np.array([rx, ry, rz])
        ax, ay, az = np.cross(reference, np.eye(3)[int(np.argmin(np.abs(reference)))]).tolist()
        sine = math.sqrt(ax * ax + ay * ay + az * az)
    return rotation_matrix((ax / sine * angle, ay / sine * angle, az / sine * angle))


def angle_deg(a: ArrayLike, b: ArrayLike) -> float:
    """Degrees between two 3-vectors (any length)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(np.degrees(np.arctan2(np.linalg.norm(np.cross(a, b)), float(a @ b))))


def rotate_windows(windows: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    """(..., 128, 9) -> same shape, each triplet rotated: v' = R v (channels stay in frontend.CHANNELS order)."""
    out = np.array(windows, dtype=np.float32, copy=True)
    matrix_t = np.asarray(rotation, dtype=np.float32).T  # (3, 3): rows @ R^T == (R @ v) per sample
    for triplet in TRIPLETS:
        out[..., triplet] = out[..., triplet] @ matrix_t
    return out


def canonical_direction(references: Iterable[ArrayLike]) -> tuple[float, float, float]:
    """The mean of the training wearers' unit references, normalized."""
    mean = np.sum([np.asarray(r, float) for r in references], axis=0)
    x, y, z = (float(v) for v in mean / np.linalg.norm(mean))
    return x, y, z


def subject_references(windows: np.ndarray, subjects: np.ndarray, config: MountConfig) -> dict[int, np.ndarray]:
    """Offline: each subject's reference from their own moving windows (a subject with none is left out)."""
    references = {}
    for subject in np.unique(subjects):
        reference = reference_direction(windows[subjects == subject], config)
        if reference is not None:
            references[int(subject)] = reference
    return references


def align_by_subject(windows: np.ndarray, subjects: np.ndarray, config: MountConfig,
                     references: dict[int, np.ndarray] | None = None) -> np.ndarray:
    """Offline: every subject's windows rotated by their reference (a calibrated wearer); `references`
    (default: `subject_references` of these windows). A subject without a reference is left as is."""
    if references is None:
        references = subject_references(windows, subjects, config)
    out = np.array(windows, dtype=np.float32, copy=True)
    for subject, reference in references.items():
        mask = subjects == subject
        if mask.any():
            out[mask] = rotate_windows(windows[mask], rotation_onto(reference, config.canonical))
    return out


def reference_rotation(direction_sum: Sequence[float] | np.ndarray, config: MountConfig) -> np.ndarray:
    """(3, 3) the rotation of a wearer whose moving windows' unit directions sum to `direction_sum` (3,)."""
    x, y, z = (float(v) for v in direction_sum)
    length = math.sqrt(x * x + y * y + z * z)
    return rotation_onto((x / length, y / length, z / length), config.canonical)


# A session whose walking gravity lies this far from the saved reference was re-mounted: 20 HAPT wearers'
# two recordings differ by 1-20 degrees (8 of 21 by 9.7-20, taken off and put back), while the mean of 20
# moving windows of one recording stays within about 3-5 degrees of that recording's own reference.
REMOUNT_DEG = 7.0

# Where a wearer's calibration stands when a window is labelled: no reference yet (windows go unrotated), a
# reference carried in from an earlier session that this session's walking has not checked yet (rotated by it:
# right unless the board was re-mounted), or one this session's walking learnt or confirmed (trusted).
MOUNT_STATES = ("uncalibrated", "carried, unchecked", "checked")


class MountCalibration:
    """Online reference of one wearer: the running mean gravity direction of the moving windows seen so far.
    Until `min_windows` moving windows are in, `rotation` is the identity (uncalibrated).

    Re-mount detection: each session (`start_session`, one per stream) checks its first `min_windows`
    moving windows against the saved reference; if their mean lies more than `remount_deg` away, the board
    was put back at another angle and the reference is re-learnt from this session's windows alone
    (`remounted` holds the angle for the window that found it); else they join the saved reference.
    With `trust_saved=False` the saved reference is not applied until that check has passed (the session's
    first windows go unrotated, as a new wearer's do)."""

    def __init__(self, config: MountConfig, direction_sum: ArrayLike = (0.0, 0.0, 0.0), windows: int = 0,
                 remount_deg: float | None = REMOUNT_DEG, trust_saved: bool = True) -> None:
        self.config = config
        self.direction_sum = np.array(direction_sum, dtype=np.float64)  # (3,) sum of unit directions (own copy)
        self.windows = int(windows)
        self.remount_deg = remount_deg  # None: never re-learn (one reference for ever)
        self.trust_saved = trust_saved  # False: a session's windows stay unrotated until its walking confirms it
        self._cached: tuple[int, np.ndarray] | None = None  # (windows, rotation) for the current sum
        # Of the last update_many's windows: gravity directions (k, 3) and the MOUNT_STATES name of each (k,).
        self.last_gravity: list[Vector3] = []
        self.last_states: list[str] = []
        self.start_session()

    @property
    def calibrated(self) -> bool:
        return self.windows >= self.config.min_windows

    def start_session(self) -> None:
        """A new session: the board may have been taken off and put back since the reference was learnt."""
        self._session_sum = np.zeros(3)  # (3,) this session's moving directions while being checked
        self._session_windows = 0
        self._checking = self.calibrated and self.remount_deg is not None
        self.remounted: float | None = None  # degrees, set by the update that detected a re-mount

    def update(self, window: np.ndarray) -> bool:
        """Add one un-normalized window (128, 9) if it is moving; -> whether it counted."""
        return self.update_many(window[None])[2][0]

    def update_many(self, windows: np.ndarray) -> tuple[list[bool], list[Vector3 | None], list[bool]]:
        """Add the moving ones of (k, 128, 9) un-normalized windows, in order (the statistics and the
        directions of all k computed in one call) -> after each window: whether windows are aligned, the
        reference's direction sum then (None while not aligning), and whether the window counted.
        Plain lists: the live path has one window at a time. `remounted` holds the angle when a window of
        this batch found a re-mount. `last_gravity` and `last_states` keep every window's gravity direction
        and where the calibration stood after it (`state`; the posture stage and the scorer read them)."""
        aligning: list[bool] = []
        sums: list[Vector3 | None] = []
        counted: list[bool] = []
        gravity: list[Vector3] = []
        states: list[str] = []
        self.remounted = None
        for direction, is_moving in moving_directions(windows, self.config):  # in order: a state machine
            counted.append(is_moving)
            gravity.append(direction)
            if is_moving:
                self._add(direction)
            states.append(self.state)
            if self.aligning:
                x, y, z = self.direction_sum.tolist()
                aligning.append(True)
                sums.append((x, y, z))
            else:
                aligning.append(False)
                sums.append(None)
        self.last_gravity, self.last_states = gravity, states
        return aligning, sums, counted

    def _add(self, direction: Vector3) -> None:
        """One moving window's unit gravity direction."""
        if not self._checking:
            self.direction_sum += direction
            self.windows += 1
            return
        self._session_sum += direction
        self._session_windows += 1
        if self._session_windows >= self.config.min_windows:
            self._checking = False
            angle = angle_deg(self._session_sum, self.direction_sum)
            assert self.remount_deg is not None  # _checking only with a threshold
            if angle > self.remount_deg:  # re-mounted: the saved reference no longer describes the board
                self.direction_sum, self.windows = self._session_sum.copy(), self._session_windows
                self._cached = None
                self.remounted = angle
            else:
                self.direction_sum += self._session_sum
                self.windows += self._session_windows

    @property
    def state(self) -> str:
        """The MOUNT_STATES name of where the calibration stands now: "carried, unchecked" while a reference
        carried in from an earlier session waits for this session's walking to check it (re-mount detection
        on); windows are rotated by it meanwhile, unless trust_saved=False."""
        if not self.calibrated:
            return MOUNT_STATES[0]
        return MOUNT_STATES[1] if self._checking else MOUNT_STATES[2]

    @property
    def aligning(self) -> bool:
        """Windows are rotated: calibrated, and (with trust_saved=False) the saved reference confirmed."""
        return self.calibrated and (self.trust_saved or not self._checking)

    def rotation(self) -> np.ndarray:
        if not self.aligning:
            return np.eye(3)
        if self._cached is None or self._cached[0] != self.windows:  # changes only when a moving window counts
            self._cached = (self.windows, reference_rotation(self.direction_sum, self.config))
        return self._cached[1]

    def align(self, window: np.ndarray) -> np.ndarray:
        """(128, 9) -> (128, 9) rotated by the current reference (as it is while uncalibrated)."""
        if not self.aligning:
            return np.asarray(window, dtype=np.float32)
        return rotate_windows(window, self.rotation())

    def to_dict(self) -> dict[str, Any]:
        return {"direction_sum": [float(v) for v in self.direction_sum], "windows": self.windows}

    @classmethod
    def from_dict(cls, config: MountConfig, data: dict[str, Any], where: str = "calibration") -> MountCalibration:
        try:
            direction_sum = [float(v) for v in data["direction_sum"]]
            windows = data["windows"]
        except (KeyError, TypeError, ValueError) as exc:
            raise MountError(f"{where}: not a mount calibration ({exc}); {NOT_A_CALIBRATION}") from None
        if len(direction_sum) != 3 or not np.all(np.isfinite(direction_sum)) or isinstance(windows, bool) \
                or not isinstance(windows, int) or windows < 0:
            raise MountError(f"{where}: direction_sum must be 3 finite numbers and windows a whole number >= 0; "
                             "delete it to calibrate afresh")
        # A sum of `windows` unit vectors from one mount is about `windows` long; zero (or far longer)
        # is no direction at all, and would fail at the first window instead of here.
        length = float(np.linalg.norm(direction_sum))
        if windows and not 0.5 * windows <= length <= windows * (1 + 1e-6):
            raise MountError(f"{where}: direction_sum {direction_sum} is {length:.3g} long for {windows} moving windows "
                             f"(a sum of {windows} unit directions is between {0.5 * windows:g} and {windows}); "
                             "the file is damaged: delete it to calibrate afresh")
        if not windows and length:
            raise MountError(f"{where}: direction_sum is not zero with 0 windows; delete it to calibrate afresh")
        return cls(config, direction_sum, windows)

    # -- the file (--mount-calibration FILE) ---------------------------------------------------------
    @classmethod
    def load(cls, config: MountConfig, path: str | Path) -> MountCalibration:
        """Read and validate a saved calibration (MountError naming the file and what to do)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise MountError(f"{path} is not a mount calibration JSON file ({exc}); {NOT_A_CALIBRATION}") from None
        except OSError as exc:
            raise MountError(f"cannot read {path}: {exc.strerror}; fix its permissions or delete it") from None
        return cls.from_dict(config, data if isinstance(data, dict) else {}, str(path))

    def save(self, path: str | Path) -> None:
        """Atomically replace `path` (temp file in the same folder, fsync, rename): a crash leaves the old
        file or the new one, never half of one. Raises OSError."""
        write_text_atomically(path, json.dumps(self.to_dict(), indent=2) + "\n")

