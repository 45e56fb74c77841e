"""Gap handling between the protocol decoder and the front-end.

The device numbers its samples (`seq`, 16 bits, wrapping). From those numbers this stage
places every sample at its *stream position* (samples since the stream started, counting
missing ones), and repairs or cuts the stream before the causal filters see it:

- a duplicate (same seq again, or a seq a few samples in the past that already arrived) is
  dropped; a sample arriving after a later one (its position was counted lost) is dropped
  and counted once, as out of order, no longer as lost;
- a sample with a NaN, an infinity or a physically impossible value is treated as missing
  (limits: any acceleration axis beyond +-16 g or any gyro axis beyond +-35 rad/s; those are
  the full-scale ranges of the MPU-6050, +-16 g and +-2000 deg/s = 34.9 rad/s, so a reading
  outside them cannot come from the sensor);
- up to `max_interpolated` (5 samples = 100 ms at 50 Hz) missing samples in a row are filled
  by linear interpolation between the samples on either side;
- a longer run of missing samples ends the segment: the next segment starts with
  `reset=True`, so the runtime resets the front-end and the window (filter state from before
  a long hole would be wrong, and a window must not straddle it);
- the device restarted (rebooted with the port kept open, as an Uno's main chip does while its
  USB chip stays up) when its seq does not continue after a boot HELLO (`note_hello`), when seq
  jumps far backwards, or when its clock `t_us` goes backwards: one device restart, nothing
  counted lost, a new segment right after the last position (whatever seq the reboot came at).

It also estimates the device's real sample rate from its timestamps (`t_us`, microseconds,
wrapping at 2**32) and says so when it is more than 2% off the nominal 50 Hz.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from firmware_bridge.protocol import (  # the wire's u16 seq, u32 microseconds
    SEQ_MODULO,
    T_US_MODULO,
    Sample,
    clock_agrees,
)

SMALL_BATCH = 8  # up to this many samples per push take the plain-Python path


@dataclass(frozen=True)
class GapConfig:
    rate_hz: float = 50.0
    max_interpolated: int = 5  # missing samples in a row still bridged (5 = 100 ms at 50 Hz)
    acc_limit_g: float = 16.0  # |ax|, |ay|, |az| above this is impossible (MPU-6050 full scale)
    gyro_limit_rad_s: float = 35.0  # |gx|, |gy|, |gz| above this is impossible (2000 deg/s)
    # A seq at most this many steps behind the last one is a late duplicate (dropped); further
    # behind (more than half the u16 space) is a device restart.
    duplicate_horizon: int = 256
    rate_tolerance: float = 0.02  # warn when the measured rate is this far off rate_hz
    rate_min_span_s: float = 10.0  # measure at least this long before judging the rate


@dataclass
class GapCounters:
    samples: int = 0  # valid samples passed on (interpolated ones not included)
    duplicates: int = 0  # dropped: seq already seen
    lost_samples: int = 0  # seq positions that never arrived
    out_of_order: int = 0  # arrived after a later sample: dropped (the filters moved on), not counted lost
    invalid_samples: int = 0  # arrived but NaN / inf / impossible: treated as missing
    short_gaps: int = 0  # holes of 1..max_interpolated missing samples, interpolated
    interpolated_samples: int = 0
    long_gaps: int = 0  # longer holes: front-end and window reset
    device_restarts: int = 0  # seq jumped far backwards
    restarts: int = 0  # restart() calls (reconnects)
    outage_samples: int = 0  # positions skipped over a reconnect (device kept sampling meanwhile)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class Segment:
    """Consecutive raw samples for the front-end.

    `start` is the stream position of raw[0]; `reset` says the front-end and window must be
    reset before this segment (true for the first segment and after every long gap).
    """

    start: int
    raw: np.ndarray  # (n, 6) float64: ax, ay, az (g), gx, gy, gz (rad/s)
    reset: bool

    @property
    def end(self) -> int:
        return self.start + len(self.raw)


def samples_to_arrays(samples: Sequence[Sample]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample objects -> (seq (n,) int64, t_us (n,) int64, raw (n, 6) float64)."""
    n = len(samples)
    table = np.array(
        [(s.seq, s.t_us, s.ax, s.ay, s.az, s.gx, s.gy, s.gz) for s in samples], dtype=np.float64
    ).reshape(n, 8)  # (n, 8); seq < 2**16 and t_us < 2**32 are exact in float64
    return table[:, 0].astype(np.int64), table[:, 1].astype(np.int64), table[:, 2:].copy()


def invalid_rows(raw: np.ndarray, config: GapConfig) -> np.ndarray:
    """(n, 6) -> (n,) bool: non-finite or beyond the sensor's full scale."""
    with np.errstate(invalid="ignore"):
        acc_bad = ~(np.abs(raw[:, :3]) <= config.acc_limit_g)  # NaN compares False -> bad
        gyro_bad = ~(np.abs(raw[:, 3:]) <= config.gyro_limit_rad_s)
    bad: np.ndarray = acc_bad.any(axis=1) | gyro_bad.any(axis=1)
    return bad


class RateEstimator:
    """The device's sample rate from its timestamps, over the span since the last restart."""

    def __init__(self, config: GapConfig):
        self.config = config
        self.reset()
        self.warnings = 0
        self.off = False  # the last check found the rate out of tolerance

    def reset(self) -> None:
        self._anchor_pos: int | None = None
        self._last_pos = 0
        self._last_t = 0
        self._elapsed_us = 0  # unwrapped time from the anchor to the last sample

    def update(self, positions: np.ndarray, t_us: np.ndarray) -> None:
        """Valid samples of one segment, in order: positions (n,) int64, t_us (n,) int64."""
        if len(positions) == 0:
            return
        if self._anchor_pos is None:
            self._anchor_pos, self._last_pos, self._last_t = int(positions[0]), int(positions[0]), int(t_us[0])
        steps = np.diff(np.concatenate([[self._last_t], t_us])) % T_US_MODULO  # (n,) wrap-aware
        self._elapsed_us += int(steps.sum())
        self._last_pos, self._last_t = int(positions[-1]), int(t_us[-1])

    def advance(self, first_pos: int, last_pos: int, last_t: int, elapsed_us: int) -> None:
        """`update` for consecutive samples first_pos..last_pos whose device time moved by `elapsed_us` from
        the last sample before them to the last of them (at `last_t`), as the gap handler measured it."""
        if self._anchor_pos is None:  # (not after a valid sample, so not from the gap handler's clean path)
            self._anchor_pos, self._last_pos, self._last_t = last_pos, last_pos, last_t
            return
        self._elapsed_us += elapsed_us
        self._last_pos, self._last_t = last_pos, last_t

    def update_scalars(self, positions: list[int], times: list[int]) -> None:
        """`update` for a few samples as Python ints (no numpy overhead)."""
        for pos, t in zip(positions, times):
            if self._anchor_pos is None:
                self._anchor_pos, self._last_pos, self._last_t = pos, pos, t
            self._elapsed_us += (t - self._last_t) % T_US_MODULO
            self._last_pos, self._last_t = pos, t

    @property
    def rate_hz(self) -> float | None:
        """Measured rate, or None before rate_min_span_s of device time."""
        if self._anchor_pos is None or self._elapsed_us < self.config.rate_min_span_s * 1e6:
            return None
        return (self._last_pos - self._anchor_pos) / (self._elapsed_us * 1e-6)

    def check(self) -> str | None:
        """A message when the rate goes off (or comes back within) tolerance, else None."""
        rate = self.rate_hz
        if rate is None:
            return None
        off = abs(rate / self.config.rate_hz - 1.0) > self.config.rate_tolerance
        if off == self.off:
            return None
        self.off = off
        if off:
            self.warnings += 1
            return (
                f"warning: the device samples at {rate:.2f} Hz, "
                f"{100 * (rate / self.config.rate_hz - 1):+.1f}% off the {self.config.rate_hz:g} Hz "
                "the model was trained at; labels may degrade (check the firmware's timer)"
            )
        return f"the device rate is back within tolerance: {rate:.2f} Hz"


@dataclass
class _Pending:
    """Rows of the segment being built."""

    start: int
    reset: bool
    rows: list[Any] = field(default_factory=list)


class GapHandler:
    """Decoded samples -> `Segment`s of valid, gap-repaired raw samples with stream positions."""

    def __init__(self, config: GapConfig = GapConfig()):
        self.config = config
        self.counters = GapCounters()
        self.rate = RateEstimator(config)
        self._last_seq: int | None = None  # seq of the last sample that arrived (valid or not)
        self._last_pos = -1  # its stream position
        self._last_t = 0  # and its device time (us)
        self._resume_from: tuple[int, int] | None = None  # (seq, t_us) before a restart()
        self._last_valid_pos: int | None = None  # position of the last valid sample of the current segment
        self._last_valid_raw: np.ndarray | None = None  # (6,)
        self._skip_on_restart = 0
        self._after_hello = False  # a HELLO came just before the next sample (maybe a boot HELLO)
        self._recent_lost: set[int] = set()  # positions counted lost within duplicate_horizon of the last
        self.invalid_run = 0  # invalid samples in a row, up to the last one
        self._period_us = 1e6 / config.rate_hz  # device time per sample, as last measured

    def note_hello(self) -> None:
        """A HELLO frame arrived: if the next sample does not continue the stream (seq backwards, the
        same seq, or device time backwards), the device rebooted, whatever its seq."""
        self._after_hello = True

    @property
    def position(self) -> int:
        """One past the last stream position seen."""
        return self._last_pos + 1

    def restart(self, skipped: int = 0) -> None:
        """The link was lost (reconnect): the next sample starts a new segment.

        If the device kept sampling through the outage (its seq and clock moved on together)
        the new segment starts at the position its seq says; if it restarted (seq and clock
        do not agree with a continuation) it starts `skipped` positions after the last one
        (the outage as the host measured it)."""
        self.counters.restarts += 1
        if self._last_seq is not None:  # (two restarts in a row keep the first resume point)
            self._resume_from = (self._last_seq, self._last_t)
        self._last_seq = None
        self._last_valid_pos = None
        self._recent_lost.clear()
        self._skip_on_restart += max(0, int(skipped))
        self.rate.reset()

    def _resume_position(self, seq: int, t_us: int) -> int:
        """Stream position of the first sample after a restart()."""
        fallback = self._last_pos + 1 + self._skip_on_restart
        resume, self._resume_from, self._skip_on_restart = self._resume_from, None, 0
        if resume is None:
            return fallback
        last_seq, last_t = resume
        step = (seq - last_seq) % SEQ_MODULO
        if not 0 < step < SEQ_MODULO // 2:
            return fallback
        if not self._clock_agrees(step, (t_us - last_t) % T_US_MODULO):
            return fallback  # seq and clock disagree: a rebooted device, not a continuation
        self.counters.outage_samples += step - 1
        return self._last_pos + step

    def push(self, seq: np.ndarray, t_us: np.ndarray, raw: np.ndarray) -> list[Segment]:
        """seq (n,) int, t_us (n,) int, raw (n, 6) float -> segments, in stream order."""
        n = len(seq)
        if n == 0:
            return []
        seq = np.asarray(seq, dtype=np.int64)
        t_us = np.asarray(t_us, dtype=np.int64)
        raw = np.asarray(raw, dtype=np.float64)
        if n <= SMALL_BATCH:
            # Live streams arrive a sample or two at a time: plain Python beats numpy's per-call cost.
            a, g = self.config.acc_limit_g, self.config.gyro_limit_rad_s
            invalid_list = [not (abs(r[0]) <= a and abs(r[1]) <= a and abs(r[2]) <= a
                                 and abs(r[3]) <= g and abs(r[4]) <= g and abs(r[5]) <= g) for r in raw.tolist()]
            return self._push_slow(seq.tolist(), t_us.tolist(), raw, invalid_list)
        last_seq = self._continued_seq()
        if not self._after_hello and last_seq is not None and self._within_limits(raw):
            # The clean block (the stream's usual case): each the next seq, device time never going back.
            first_step = (int(t_us[0]) - self._last_t) % T_US_MODULO
            steps, elapsed = np.diff(seq) % SEQ_MODULO, np.diff(t_us) % T_US_MODULO  # (n - 1,) each, wrap-aware
            if (int(seq[0]) - last_seq) % SEQ_MODULO == 1 and first_step < T_US_MODULO // 2 \
                    and bool((steps == 1).all()) and int(elapsed.max(initial=0)) < T_US_MODULO // 2:
                last = int(elapsed[-1]) if n >= 2 else first_step
                return [self._take_clean(raw, int(seq[-1]), int(t_us[-1]), last, first_step + int(elapsed.sum()))]
        return self._push_slow(seq.tolist(), t_us.tolist(), raw, invalid_rows(raw, self.config).tolist())

    def push_samples(self, samples: Sequence[Sample]) -> list[Segment]:
        """`push` of decoded Sample objects (a serial port's few per read): a clean continuation of up to
        SMALL_BATCH samples is checked in plain Python and costs one numpy call (the segment's raw rows)."""
        n = len(samples)
        if n > SMALL_BATCH:
            return self.push(*samples_to_arrays(samples))
        if n == 0:
            return []
        seq = [s.seq for s in samples]
        t_us = [s.t_us for s in samples]
        rows = [s.values() for s in samples]
        a, g = self.config.acc_limit_g, self.config.gyro_limit_rad_s
        invalid = [not (abs(r[0]) <= a and abs(r[1]) <= a and abs(r[2]) <= a
                        and abs(r[3]) <= g and abs(r[4]) <= g and abs(r[5]) <= g) for r in rows]
        last_seq = self._continued_seq()
        if not self._after_hello and last_seq is not None and not any(invalid):
            last_t, elapsed, step = self._last_t, 0, 0
            for s, t in zip(seq, t_us):
                step = (t - last_t) % T_US_MODULO
                if (s - last_seq) % SEQ_MODULO != 1 or step >= T_US_MODULO // 2:
                    break
                last_seq, last_t, elapsed = s, t, elapsed + step
            else:
                return [self._take_clean(np.array(rows, dtype=np.float64), last_seq, last_t, step, elapsed)]
        return self._push_slow(seq, t_us, np.array(rows, dtype=np.float64), invalid)

    def _continued_seq(self) -> int | None:
        """The seq a clean continuation follows: the last sample's, if it was valid; else None."""
        return self._last_seq if self._last_valid_pos == self._last_pos else None

    def _within_limits(self, raw: np.ndarray) -> bool:
        """Every value of raw (n, 6) finite and within the sensor's full scale, from the six columns' peaks
        (two numpy calls; a NaN makes its column's peak NaN, which compares False)."""
        ax, ay, az, gx, gy, gz = np.abs(raw).max(axis=0).tolist()
        a, g = self.config.acc_limit_g, self.config.gyro_limit_rad_s
        return bool(ax <= a and ay <= a and az <= a and gx <= g and gy <= g and gz <= g)

    def _take_clean(self, raw: np.ndarray, last_seq: int, last_t: int, last_step_us: int,
                    elapsed_us: int) -> Segment:
        """raw (n, 6) continues the stream cleanly up to (last_seq, last_t), its last sample `last_step_us`
        after the one before and all of it `elapsed_us` after the previous last sample -> its segment."""
        n = len(raw)
        start = self._last_pos + 1
        self._last_seq, self._last_pos, self._last_t = last_seq, start + n - 1, last_t
        self._last_valid_pos, self._last_valid_raw = self._last_pos, raw[-1]
        self.counters.samples += n
        self.invalid_run = 0
        if 0 < last_step_us < 1e6:
            self._period_us = last_step_us
        self.rate.advance(start, self._last_pos, last_t, elapsed_us)
        return Segment(start, raw, reset=False)

    def _classify(self, s: int, t: int) -> tuple[str, int]:
        """The sample (seq s, device time t) after the last one -> (kind, stream position):
        "next", "gap", "duplicate", "late" (arrived out of order) or "restart"."""
        assert self._last_seq is not None  # called once a first sample was taken
        step = (s - self._last_seq) % SEQ_MODULO
        back_in_time = (t - self._last_t) % T_US_MODULO >= T_US_MODULO // 2
        after_hello, self._after_hello = self._after_hello, False
        if step == 1 and not back_in_time:
            if (t - self._last_t) % T_US_MODULO < 1e6:
                self._period_us = (t - self._last_t) % T_US_MODULO or self._period_us
            return "next", self._last_pos + 1
        if after_hello and (back_in_time or step == 0 or step >= SEQ_MODULO // 2):
            return "restart", self._last_pos + 1  # a boot HELLO, then a seq that does not continue
        behind = (SEQ_MODULO - step) % SEQ_MODULO
        if behind <= self.config.duplicate_horizon:
            position = self._last_pos - behind
            return ("late" if position in self._recent_lost else "duplicate"), position
        if step >= SEQ_MODULO // 2 or back_in_time or not self._clock_agrees(step, (t - self._last_t) % T_US_MODULO):
            # seq went back, the clock went back, or seq jumped ahead by more than the clock moved (a reboot
            # whose clock restarted near the u32 wrap of the last one looks "forward" in both)
            return "restart", self._last_pos + 1
        return "gap", self._last_pos + step

    def _clock_agrees(self, step: int, elapsed_us: int) -> bool:
        """`step` samples took `elapsed_us` of device time, as this device samples (its own period,
        measured between consecutive samples, so a 25 Hz board is judged by 40 ms)."""
        return clock_agrees(step, elapsed_us, self._period_us)

    def _remember_lost(self, first: int, end: int) -> None:
        """Positions first..end-1 were counted lost; keep those a late sample could still fill."""
        horizon = self.config.duplicate_horizon
        self._recent_lost.update(range(max(first, end - horizon), end))
        if len(self._recent_lost) > 4 * horizon:
            self._recent_lost = {p for p in self._recent_lost if p >= end - horizon}

    def _push_slow(self, seq: list[int], t_us: list[int], raw: np.ndarray, invalid: list[bool]) -> list[Segment]:
        cfg, counters = self.config, self.counters
        segments: list[Segment] = []
        pending: _Pending | None = None
        valid_positions: list[int] = []
        valid_times: list[int] = []

        def close() -> None:
            nonlocal pending
            if pending is not None and pending.rows:
                segments.append(Segment(pending.start, np.array(pending.rows, dtype=np.float64), pending.reset))
                self._feed_rate(valid_positions, valid_times)
            pending = None

        for s, t, row, bad in zip(seq, t_us, raw, invalid):
            if self._last_seq is None:
                pos = self._resume_position(s, t)
                self._after_hello = False
            else:
                kind, pos = self._classify(s, t)
                if kind == "duplicate":
                    counters.duplicates += 1
                    continue
                if kind == "late":  # counted lost when a later sample came; it did arrive, too late to use
                    counters.out_of_order += 1
                    counters.lost_samples -= 1
                    self._recent_lost.discard(pos)
                    continue
                if kind == "restart":
                    # The device rebooted: nothing lost; carry on right after the last position.
                    counters.device_restarts += 1
                    close()
                    self._last_valid_pos = None
                    self._recent_lost.clear()
                    self.rate.reset()
                elif kind == "gap":
                    counters.lost_samples += pos - self._last_pos - 1
                    self._remember_lost(self._last_pos + 1, pos)
            self._last_seq, self._last_pos, self._last_t = s, pos, t
            if bad:
                counters.invalid_samples += 1
                self.invalid_run += 1
                continue
            self.invalid_run = 0
            counters.samples += 1
            missing = None if self._last_valid_pos is None else pos - self._last_valid_pos - 1
            if missing is None or missing > cfg.max_interpolated:
                if missing is not None:
                    counters.long_gaps += 1
                close()
                pending = _Pending(start=pos, reset=True)
            else:
                if pending is None:
                    pending = _Pending(start=pos - missing, reset=False)  # the last valid position + 1
                if missing > 0:
                    counters.short_gaps += 1
                    counters.interpolated_samples += missing
                    fractions = np.arange(1, missing + 1)[:, None] / (missing + 1)  # (m, 1)
                    pending.rows.extend(self._last_valid_raw + fractions * (row - self._last_valid_raw))  # (m, 6)
            pending.rows.append(row)
            valid_positions.append(pos)
            valid_times.append(t)
            self._last_valid_pos, self._last_valid_raw = pos, row
        close()
        return segments

    def _feed_rate(self, positions: list[int], times: list[int]) -> None:
        if len(positions) <= SMALL_BATCH:
            self.rate.update_scalars(positions, times)
        else:
            self.rate.update(np.array(positions, dtype=np.int64), np.array(times, dtype=np.int64))
        positions.clear()
        times.clear()


def merge_segments(segments: Iterable[Segment]) -> list[Segment]:
    """Join segments that continue each other without a reset (fewer, larger front-end calls)."""
    merged: list[Segment] = []
    for seg in segments:
        if merged and not seg.reset and merged[-1].end == seg.start:
            last = merged[-1]
            merged[-1] = Segment(last.start, np.concatenate([last.raw, seg.raw]), last.reset)
        else:
            merged.append(seg)
    return merged
