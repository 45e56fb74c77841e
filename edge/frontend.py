"""The streaming front-end: raw IMU samples -> the nine UCI-HAR channels -> 128-sample windows.

The same code makes the training windows (offline, over whole recordings) and runs on the
device (online, a few samples at a time), so the model never sees a train/serve skew.

The recipe is the one measured against the official UCI-HAR windows
(`../shared/docs/preprocessing.md`):

    raw acc (g), raw gyro (rad/s)                       (n, 6)
      -> causal median filter, kernel 3                 (n, 6)
      -> causal Butterworth low-pass (noise), order 8 at 19 Hz   (n, 6)
      -> gravity = causal Butterworth order 3 at 0.3 Hz of the filtered acc   (n, 3)
      -> [acc - gravity, gyro, acc]                     (n, 9)

Every filter is causal and keeps its state for the whole stream: UCI-HAR's gravity is only
reproduced by a filter that runs over the whole recording (restarting it per window is 0.07 g
off). State starts in steady state on the first sample, so a stream that begins at rest needs no
settling time; after a start in motion the gravity filter needs about 10 s to settle.

`StreamingFilter.push` and `SlidingWindow.push` give bit-identical output whether a stream is
fed one sample at a time or all at once (the filter state is float64 and `sosfilt` runs the
same recursion in the same order either way).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import signal

# Order of the nine model channels (UCI-HAR "Inertial Signals" order).
CHANNELS: tuple[str, ...] = (
    "body_acc_x", "body_acc_y", "body_acc_z",
    "body_gyro_x", "body_gyro_y", "body_gyro_z",
    "total_acc_x", "total_acc_y", "total_acc_z",
)
# The default class set, index = HAPT/UCI-HAR activity id - 1. A model trained on one's own data names its
# own classes (checkpoint and bundle "classes"); this is the list of the shipped model and the HAPT default.
CLASSES: tuple[str, ...] = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
CHANNEL_UNITS: tuple[str, ...] = ("g",) * 3 + ("rad/s",) * 3 + ("g",) * 3
# Order of the six raw input columns.
RAW_COLUMNS: tuple[str, ...] = ("ax", "ay", "az", "gx", "gy", "gz")


class FrontEndError(ValueError):
    """Input the front-end cannot filter (wrong shape, non-finite values)."""


@dataclass(frozen=True)
class FrontEndConfig:
    """Everything that defines the front-end; stored in checkpoints and bundles."""

    sample_rate_hz: float = 50.0
    median_kernel: int = 3
    noise_order: int = 8
    noise_cutoff_hz: float = 19.0
    gravity_order: int = 3
    gravity_cutoff_hz: float = 0.3
    window: int = 128
    hop: int = 64

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FrontEndConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise FrontEndError(
                f"unknown front-end parameter(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)


class StreamingFilter:
    """Raw samples (n, 6) -> UCI-HAR channels (n, 9), with state carried across calls."""

    def __init__(self, config: FrontEndConfig = FrontEndConfig()):
        if config.median_kernel < 1 or config.median_kernel % 2 == 0:
            raise FrontEndError(f"median_kernel must be odd and >= 1, got {config.median_kernel}")
        self.config = config
        fs = config.sample_rate_hz
        self._noise_sos = signal.butter(config.noise_order, config.noise_cutoff_hz, fs=fs, output="sos")
        self._gravity_sos = signal.butter(config.gravity_order, config.gravity_cutoff_hz, fs=fs, output="sos")
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample starts the filters again in steady state."""
        self._median_history: np.ndarray | None = None  # (kernel-1, 6) last raw samples
        self._noise_state: np.ndarray | None = None     # (sections, 2, 6)
        self._gravity_state: np.ndarray | None = None   # (sections, 2, 3)

    def _start(self, first_raw: np.ndarray) -> None:
        # Steady state for a stream that has been at its first value forever.
        k = self.config.median_kernel
        self._median_history = np.repeat(first_raw[None, :], k - 1, axis=0)  # (k-1, 6)
        zi_noise = signal.sosfilt_zi(self._noise_sos)                       # (sections, 2)
        self._noise_state = zi_noise[:, :, None] * first_raw[None, None, :]  # (sections, 2, 6)
        zi_gravity = signal.sosfilt_zi(self._gravity_sos)
        self._gravity_state = zi_gravity[:, :, None] * first_raw[None, None, :3]  # (sections, 2, 3)

    def _median(self, raw: np.ndarray) -> np.ndarray:
        k = self.config.median_kernel
        extended = np.concatenate([self._median_history, raw], axis=0)       # (k-1+n, 6)
        self._median_history = extended[len(extended) - (k - 1):]
        if k == 1:
            return raw
        # Causal: output t is the median of inputs t-k+1 .. t (UCI's centred median, one sample late).
        views = np.lib.stride_tricks.sliding_window_view(extended, k, axis=0)  # (n, 6, k)
        return np.median(views, axis=-1)                                       # (n, 6)

    def push(self, raw: np.ndarray) -> np.ndarray:
        """Filter a chunk of raw samples (n, 6) [ax, ay, az g; gx, gy, gz rad/s] -> (n, 9) float32."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != 6:
            raise FrontEndError(
                f"raw samples must have shape (n, 6) = {RAW_COLUMNS}, got {raw.shape}"
            )
        if len(raw) == 0:
            return np.zeros((0, 9), dtype=np.float32)
        if not np.isfinite(raw).all():
            bad = int(np.flatnonzero(~np.isfinite(raw).all(axis=1))[0])
            raise FrontEndError(
                f"raw sample {bad} of this chunk is not finite ({raw[bad].tolist()}); "
                "treat such samples as missing before the front-end"
            )
        if self._median_history is None:
            self._start(raw[0])
        despiked = self._median(raw)                                                        # (n, 6)
        smooth, self._noise_state = signal.sosfilt(self._noise_sos, despiked, axis=0, zi=self._noise_state)  # (n, 6)
        acc, gyro = smooth[:, :3], smooth[:, 3:]                                            # (n, 3) each
        gravity, self._gravity_state = signal.sosfilt(self._gravity_sos, acc, axis=0, zi=self._gravity_state)  # (n, 3)
        return np.concatenate([acc - gravity, gyro, acc], axis=1).astype(np.float32)        # (n, 9)


class SlidingWindow:
    """Channels (n, 9) -> windows of `size` samples every `hop` samples.

    `push` returns (windows (k, size, 9) float32, ends (k,) int64) where ends[i] is one past the
    window's last sample, counted from the last reset: size, size + hop, size + 2 hop, ...
    """

    def __init__(self, size: int = 128, hop: int = 64, n_channels: int = 9):
        if not (0 < hop <= size):
            raise FrontEndError(f"need 0 < hop <= size, got size={size}, hop={hop}")
        self.size, self.hop, self.n_channels = size, hop, n_channels
        self.reset()

    def reset(self) -> None:
        self._buffer = np.zeros((0, self.n_channels), dtype=np.float32)  # last samples, at most size-1
        self._seen = 0  # samples pushed since reset

    def push(self, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels = np.asarray(channels, dtype=np.float32)
        buffer_start = self._seen - len(self._buffer)  # stream index of self._buffer[0]
        extended = np.concatenate([self._buffer, channels], axis=0)  # (b+n, 9)
        self._seen += len(channels)
        # Window ends that became complete with this chunk: size + m*hop in (seen-n, seen].
        first_m = max(0, -((-(self._seen - len(channels) + 1 - self.size)) // self.hop))
        ends = np.arange(self.size + first_m * self.hop, self._seen + 1, self.hop, dtype=np.int64)
        if len(ends):
            views = np.lib.stride_tricks.sliding_window_view(extended, self.size, axis=0)  # (b+n-size+1, 9, size)
            windows = views[ends - self.size - buffer_start].transpose(0, 2, 1).copy()   # (k, size, 9)
        else:
            windows = np.zeros((0, self.size, self.n_channels), dtype=np.float32)
        keep = min(len(extended), self.size - 1)
        self._buffer = extended[len(extended) - keep:].copy()
        return windows, ends


class FrontEnd:
    """Filter + window: raw samples (n, 6) -> (windows (k, 128, 9), ends (k,))."""

    def __init__(self, config: FrontEndConfig = FrontEndConfig()):
        self.config = config
        self.filter = StreamingFilter(config)
        self.window = SlidingWindow(config.window, config.hop)

    def reset(self) -> None:
        self.filter.reset()
        self.window.reset()

    def push(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.window.push(self.filter.push(raw))


def filter_recording(raw: np.ndarray, config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """Run a fresh filter over a whole recording (n, 6) -> (n, 9) float32."""
    return StreamingFilter(config).push(raw)
