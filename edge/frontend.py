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

Start-up cost: the filters are scipy's, but `import scipy.signal` takes over a second and ~70 MiB
(its __init__ imports all of scipy.signal, scipy.stats, scipy.optimize...), ten times the rest of the
runtime. So the device imports only what it runs: the compiled sosfilt recursion
(`scipy.signal._sosfilt`, which needs nothing but numpy) and the filter coefficients from the bundle
(`FilterDesign`, designed by scipy.signal.butter at export time). Without stored coefficients
(training, old bundles) `FilterDesign.design` imports scipy.signal as before.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import math
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrontEndConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise FrontEndError(
                f"unknown front-end parameter(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)


def _load_sosfilt_kernel() -> Callable[[np.ndarray, np.ndarray, np.ndarray], None]:
    """scipy's compiled second-order-section recursion, `_sosfilt(sos (s, 6), x (m, n), zi (m, s, 2))`
    filtering each row of x in place; what `scipy.signal.sosfilt` calls after reshaping its arguments.

    Loaded from its extension file so that `scipy/signal/__init__.py` (1+ s, ~70 MiB) does not run;
    registered under its own name, so a later `import scipy.signal` reuses this very module. Falls back
    to the ordinary import where the file is not where scipy 1.10-1.17 keep it."""
    name = "scipy.signal._sosfilt"
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.find_spec("scipy")  # scipy/__init__.py itself is light (version, config)
        directory = Path(spec.origin).parent / "signal" if spec and spec.origin else None
        paths = [directory / f"_sosfilt{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES] \
            if directory else []
        path = next((p for p in paths if p.is_file()), None)
        if path is None:
            from scipy.signal._sosfilt import _sosfilt
            return _sosfilt
        import scipy  # noqa: F401  (the parent package, for the extension's own imports)
        module_spec = importlib.util.spec_from_file_location(name, path)
        assert module_spec is not None and module_spec.loader is not None  # a file path with an extension suffix
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        sys.modules[name] = module
    kernel: Callable[[np.ndarray, np.ndarray, np.ndarray], None] = module._sosfilt
    return kernel


_sosfilt = _load_sosfilt_kernel()


@dataclass(frozen=True, eq=False)
class FilterDesign:
    """The front-end's two Butterworth low-passes as second-order sections, `sos` (sections, 6)
    [b0 b1 b2 a0 a1 a2], each with `zi` (sections, 2), the filter state after a unit input held
    forever (scipy.signal.butter(..., output="sos") and scipy.signal.sosfilt_zi give them).

    Bundles store them (`frontend_filters` in bundle.json, written by har-export) so that the device
    need not import scipy.signal; `from_dict` checks them against the front-end configuration
    (section count, unit gain at 0 Hz, -3 dB at the cutoff, zi a steady state) with numpy alone."""

    noise_sos: np.ndarray    # (ceil(noise_order / 2), 6) float64
    noise_zi: np.ndarray     # (ceil(noise_order / 2), 2) float64
    gravity_sos: np.ndarray  # (ceil(gravity_order / 2), 6) float64
    gravity_zi: np.ndarray   # (ceil(gravity_order / 2), 2) float64

    @classmethod
    def design(cls, config: FrontEndConfig) -> FilterDesign:
        """Design with scipy.signal (imported here, at export or training time, not on the device)."""
        from scipy import signal

        fs = config.sample_rate_hz
        noise = signal.butter(config.noise_order, config.noise_cutoff_hz, fs=fs, output="sos")
        gravity = signal.butter(config.gravity_order, config.gravity_cutoff_hz, fs=fs, output="sos")
        return cls(noise, signal.sosfilt_zi(noise), gravity, signal.sosfilt_zi(gravity))

    def to_dict(self) -> dict[str, Any]:
        return {"noise": {"sos": self.noise_sos.tolist(), "zi": self.noise_zi.tolist()},
                "gravity": {"sos": self.gravity_sos.tolist(), "zi": self.gravity_zi.tolist()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any], config: FrontEndConfig) -> FilterDesign:
        """Stored coefficients (as `to_dict` writes them), checked against `config`; FrontEndError if
        they are malformed or are not the configuration's filters."""
        arrays = {}
        for name, order, cutoff in (("noise", config.noise_order, config.noise_cutoff_hz),
                                    ("gravity", config.gravity_order, config.gravity_cutoff_hz)):
            sections = math.ceil(order / 2)
            try:
                sos = np.array(data[name]["sos"], dtype=np.float64)
                zi = np.array(data[name]["zi"], dtype=np.float64)
            except (KeyError, TypeError, ValueError) as exc:
                raise FrontEndError(f"{name} filter: expected {{'sos': [[6 numbers] x {sections}], "
                                    f"'zi': [[2 numbers] x {sections}]}} ({exc!r})") from None
            if sos.shape != (sections, 6) or zi.shape != (sections, 2) \
                    or not (np.isfinite(sos).all() and np.isfinite(zi).all()):
                raise FrontEndError(f"{name} filter: sos {sos.shape} / zi {zi.shape} must be finite and of shape "
                                    f"({sections}, 6) / ({sections}, 2) for order {order}")
            _check_lowpass(name, sos, zi, cutoff, config.sample_rate_hz)
            arrays[name] = (sos, zi)
        return cls(*arrays["noise"], *arrays["gravity"])


def _check_lowpass(name: str, sos: np.ndarray, zi: np.ndarray, cutoff_hz: float, fs: float) -> None:
    """Unit gain at 0 Hz, 1/sqrt(2) at the cutoff (a Butterworth's -3 dB point), zi a unit-step steady state."""
    def gain(f_hz: float) -> float:
        z = np.exp(-1j * 2 * np.pi * f_hz / fs) ** np.arange(3)                  # (3,) 1, z^-1, z^-2
        return float(np.abs(np.prod((sos[:, :3] @ z) / (sos[:, 3:] @ z))))
    step = np.ones((1, 64))
    state = zi[None].copy()                                                      # (1, sections, 2)
    _sosfilt(np.ascontiguousarray(sos), step, state)
    if not (abs(gain(0.0) - 1) < 1e-6 and abs(gain(cutoff_hz) - 2 ** -0.5) < 1e-6
            and np.allclose(step, 1, atol=1e-9) and np.allclose(state[0], zi, atol=1e-9)):
        raise FrontEndError(f"{name} filter: the stored coefficients are not the configuration's {cutoff_hz:g} Hz "
                            "Butterworth low-pass with its steady state")


def median_of_three(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Elementwise median of three arrays with four min/max passes (np.median sorts: ~20x slower per call)."""
    median: np.ndarray = np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    return median


class StreamingFilter:
    """Raw samples (n, 6) -> UCI-HAR channels (n, 9), with state carried across calls.

    `design`: the filters' coefficients (a bundle's `FilterDesign`); designed from `config` with
    scipy.signal when not given."""

    def __init__(self, config: FrontEndConfig = FrontEndConfig(), design: FilterDesign | None = None):
        if config.median_kernel < 1 or config.median_kernel % 2 == 0:
            raise FrontEndError(f"median_kernel must be odd and >= 1, got {config.median_kernel}")
        self.config = config
        self.design = design if design is not None else FilterDesign.design(config)
        self._noise_sos = np.ascontiguousarray(self.design.noise_sos)      # (s, 6)
        self._gravity_sos = np.ascontiguousarray(self.design.gravity_sos)  # (s, 6)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next sample starts the filters again in steady state."""
        self._median_history: np.ndarray | None = None  # (kernel-1, 6) last raw samples
        # State in the kernel's layout, one row per channel (scipy's sosfilt transposes to this per call).
        self._noise_state: np.ndarray | None = None     # (6, sections, 2)
        self._gravity_state: np.ndarray | None = None   # (3, sections, 2)

    def _start(self, first_raw: np.ndarray) -> None:
        # Steady state for a stream that has been at its first value forever.
        k = self.config.median_kernel
        self._median_history = np.repeat(first_raw[None, :], k - 1, axis=0)  # (k-1, 6)
        self._noise_state = first_raw[:, None, None] * self.design.noise_zi[None]          # (6, s, 2)
        self._gravity_state = first_raw[:3, None, None] * self.design.gravity_zi[None]     # (3, s, 2)

    def _median(self, raw: np.ndarray) -> np.ndarray:
        k = self.config.median_kernel
        extended = np.concatenate([self._median_history, raw], axis=0)       # (k-1+n, 6)
        self._median_history = extended[len(extended) - (k - 1):]
        if k == 1:
            return raw
        # Causal: output t is the median of inputs t-k+1 .. t (UCI's centred median, one sample late).
        if k == 3:
            return median_of_three(extended[:-2], extended[1:-1], extended[2:])  # (n, 6)
        views = np.lib.stride_tricks.sliding_window_view(extended, k, axis=0)  # (n, 6, k)
        median: np.ndarray = np.median(views, axis=-1)                         # (n, 6)
        return median

    def push(self, raw: np.ndarray) -> np.ndarray:
        """Filter a chunk of raw samples (n, 6) [ax, ay, az g; gx, gy, gz rad/s] -> (n, 9) float32."""
        raw = np.asarray(raw, dtype=np.float64)
        if raw.ndim != 2 or raw.shape[1] != 6:
            raise FrontEndError(
                f"raw samples must have shape (n, 6) = {RAW_COLUMNS}, got {raw.shape}"
            )
        if len(raw) == 0:
            return np.zeros((0, 9), dtype=np.float32)
        # One reduction instead of two: a finite sum means finite values (an overflowing sum is checked in full).
        if not math.isfinite(raw.sum()) and not np.isfinite(raw).all():
            bad = int(np.flatnonzero(~np.isfinite(raw).all(axis=1))[0])
            raise FrontEndError(
                f"raw sample {bad} of this chunk is not finite ({raw[bad].tolist()}); "
                "treat such samples as missing before the front-end"
            )
        if self._median_history is None:
            self._start(raw[0])
        assert self._noise_state is not None and self._gravity_state is not None  # _start set them
        # The kernel filters rows in place: one row per channel, as scipy.signal.sosfilt lays them out.
        smooth = np.array(self._median(raw).T, order="C")                      # (6, n) float64
        _sosfilt(self._noise_sos, smooth, self._noise_state)                   # noise low-pass, in place
        gravity = smooth[:3].copy()                                            # (3, n) acc
        _sosfilt(self._gravity_sos, gravity, self._gravity_state)              # gravity low-pass, in place
        out = np.empty((len(raw), 9), dtype=np.float32)                        # (n, 9)
        np.subtract(smooth[:3], gravity, out=out[:, 0:3].T)                    # body acc (float64, then float32)
        out[:, 3:6] = smooth[3:].T                                             # gyro
        out[:, 6:9] = smooth[:3].T                                             # total acc
        return out


NO_ENDS = np.zeros(0, dtype=np.int64)  # (0,) the window ends of a push that completes none (shared, never written)


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
        # The last samples in a preallocated buffer, appended in place and moved down only when it is full:
        # no concatenation and no copy of the window's history per push (a live port pushes every hop).
        self._buffer = np.empty((4 * self.size, self.n_channels), dtype=np.float32)  # rows [0, _fill) in use
        self._fill = 0
        self._seen = 0  # samples pushed since reset

    def push(self, channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        channels = np.asarray(channels, dtype=np.float32)
        n = len(channels)
        if self._fill + n > len(self._buffer):
            keep = min(self._fill, self.size - 1)  # what a window ending later can still need
            if keep + n > len(self._buffer):  # a chunk longer than the buffer: room for all of it
                self._buffer = np.concatenate([self._buffer[self._fill - keep:self._fill],
                                               np.empty((n, self.n_channels), np.float32)])
            else:
                self._buffer[:keep] = self._buffer[self._fill - keep:self._fill]
            self._fill = keep
        self._buffer[self._fill:self._fill + n] = channels
        self._fill += n
        self._seen += n
        # Window ends that became complete with this chunk: size + m*hop in (seen-n, seen]; plain ints, as
        # this runs for every chunk a live port delivers.
        first_m = max(0, -((-(self._seen - n + 1 - self.size)) // self.hop))
        ends = list(range(self.size + first_m * self.hop, self._seen + 1, self.hop))
        if not ends:
            return np.zeros((0, self.size, self.n_channels), dtype=np.float32), NO_ENDS
        buffer_start = self._seen - self._fill  # stream index of self._buffer[0]
        windows = np.empty((len(ends), self.size, self.n_channels), dtype=np.float32)  # (k, size, 9)
        for i, end in enumerate(ends):
            windows[i] = self._buffer[end - self.size - buffer_start:end - buffer_start]
        return windows, np.array(ends, dtype=np.int64)  # (k,)


class FrontEnd:
    """Filter + window: raw samples (n, 6) -> (windows (k, 128, 9), ends (k,))."""

    def __init__(self, config: FrontEndConfig = FrontEndConfig(), design: FilterDesign | None = None):
        self.config = config
        self.filter = StreamingFilter(config, design)
        self.window = SlidingWindow(config.window, config.hop)

    def reset(self) -> None:
        self.filter.reset()
        self.window.reset()

    def push(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.window.push(self.filter.push(raw))


def filter_recording(raw: np.ndarray, config: FrontEndConfig = FrontEndConfig()) -> np.ndarray:
    """Run a fresh filter over a whole recording (n, 6) -> (n, 9) float32."""
    return StreamingFilter(config).push(raw)
