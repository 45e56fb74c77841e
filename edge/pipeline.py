"""The streaming pipeline, from bytes (or decoded samples) to labelled windows.

    source -> protocol decoder -> gap handling -> front-end (filter + window 128 / hop 64)
           -> mount alignment (when the bundle has one) -> normalization (bundle statistics)
           -> inference -> wearer profile (with --profile, edge/enroll.py) -> post-processing -> sinks

`Pipeline.process(item)` runs one source item through every stage and returns the window
results it completed (the main loop around it: edge/loop.py). Everything here is numpy / scipy
plus the bundle's runtime; never torch. `StageTimers` keeps each stage's seconds and items
(`har-edge bench`).

Output contract, one dict per window in stream order (`window_result` keys):
`sample_end` (stream position one past the window's last raw sample, counting the stream's
samples from 0 including missing ones, so after a gap reset it keeps counting from the stream
start), `label` (after post-processing; "uncertain" below the confidence floor), `raw_label`
(argmax of this window alone), `confidence` (of `label`'s decision), `probs` (this window's
class probabilities), `t` (wall time, s), `latency_ms` (from the arrival of the bytes or block
that completed the window to this result); `transition` (only with a model that has transition
classes, and only on a window recognised as one: e.g. "SIT_TO_STAND", edge/postprocess.py).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from firmware_bridge.protocol import SEQ_MODULO, T_US_MODULO, Hello

from edge.frontend import NO_ENDS, FrontEnd
from edge.gaps import GapConfig, GapHandler, Segment, samples_to_arrays
from edge.messages import say as say_on_stderr
from edge.model import EdgeError, Model
from edge.mount import (
    MOUNT_STATES,
    MountCalibration,
    Vector3,
    gravity_directions,
    reference_rotation,
    triplet_matrix,
)
from edge.postprocess import Decision, LabelSmoother, SmoothingConfig, round6, softmax_rows
from edge.posture import NO_RISE, RiseState, RiseTracker, SessionPostures
from edge.sources import ByteChunk, LinkEvent, SampleBlock
from edge.status import InvalidWatch, ModeCheck, RateWatch, StallWatch, StatusEvents

if TYPE_CHECKING:
    from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder, Log, Sample

    from edge.enroll import Profile
    from edge.model import FeatureSession
    from edge.sinks import RecordingSink

_NO_WINDOWS = np.zeros((0, 128, 9), dtype=np.float32)


def _silent(message: str) -> None:
    """`notify` of a prewarm's throwaway copy: what it would say, the real pass says."""


class StageTimers:
    """Seconds spent per stage and how many calls / items went through it.

        with self.timers.stage("gaps", len(seq)):   # one line per stage; items may be set inside
            ...
    """

    STAGES = ("decode", "gaps", "frontend", "align", "normalize", "inference", "profile", "postures", "postprocess",
              "pipeline", "prewarm")

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(self.STAGES, 0.0)
        self.items = dict.fromkeys(self.STAGES, 0)

    def add(self, stage: str, seconds: float, items: int) -> None:
        self.seconds[stage] += seconds
        self.items[stage] += items

    def stage(self, name: str, items: int = 0) -> StageClock:
        """A context manager timing one pass of stage `name` over `items` items (counted when it ends)."""
        return StageClock(self, name, items)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {s: {"seconds": self.seconds[s], "items": self.items[s]} for s in self.STAGES}


class StageClock:
    """One timed pass of a stage; `items` can be set inside the block when only the stage knows it.
    A pass that raises is not counted. A plain class, not contextlib: it runs per sample on a live port."""

    __slots__ = ("timers", "name", "items", "started")

    def __init__(self, timers: StageTimers, name: str, items: int) -> None:
        self.timers, self.name, self.items, self.started = timers, name, items, 0.0

    def __enter__(self) -> StageClock:
        self.started = time.perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.timers.add(self.name, time.perf_counter() - self.started, self.items)


def window_result(sample_end: int, decision: Decision, probs: list[float], classes: Sequence[str],
                  arrival: float) -> dict[str, Any]:
    """probs: this window's class probabilities, already rounded plain floats."""
    result: dict[str, Any] = {
        "sample_end": sample_end,
        "label": decision.label,
        "raw_label": decision.raw_label,
        "confidence": round(decision.confidence, 6),
        "probs": dict(zip(classes, probs)),
        "t": time.time(),
        "latency_ms": round((time.perf_counter() - arrival) * 1e3, 4),
    }
    if decision.transition is not None:  # a transition model recognised a posture change in this window
        result["transition"] = decision.transition
    return result


class Pipeline:
    """One stream's state: decoder, gap handler, front-end, smoother; the model's session."""

    def __init__(self, model: Model, smoothing: SmoothingConfig = SmoothingConfig(),
                 gaps: GapConfig | None = None, decoder: FrameDecoder | CsvLineDecoder | None = None,
                 notify: Callable[[str], None] | None = None, calibration: MountCalibration | None = None,
                 stall_after_s: float = 10.0, recorder: RecordingSink | None = None,
                 profile: Profile | None = None, posture_rule: bool = True) -> None:
        self.model = model
        self.profile = profile  # edge.enroll.Profile: the wearer's correction of the logits, or None
        # The bundle's session-relative sitting / standing rule (edge/posture.py), unless turned off.
        self.postures = SessionPostures(model.posture, model.classes) \
            if posture_rule and model.posture is not None else None
        fc = model.frontend_config
        self.rise_tracker = RiseTracker(fc.sample_rate_hz, fc.window, fc.hop) if self.postures is not None else None
        self.window_rises: list[RiseState] = []  # k: what the rise tracker gave for each of the last windows
        self.classes = model.classes
        self.decoder = decoder  # FrameDecoder / CsvLineDecoder for byte sources (FrameDecoder if None)
        self.recorder = recorder  # sinks.RecordingSink: fed what the decode stage gives (har-edge record)
        rate = model.frontend_config.sample_rate_hz
        self.gaps = GapHandler(gaps if gaps is not None else GapConfig(rate_hz=rate))
        self.frontend = FrontEnd(model.frontend_config, model.filters)
        self.smoother = LabelSmoother(model.classes, smoothing)
        self.notify = notify or say_on_stderr
        # Said once each, on stderr, as JSONL status lines and in the counters (edge/status.py).
        self.status = StatusEvents(self.notify)
        self.stall = StallWatch(self.status, stall_after_s)
        self.mode_check = ModeCheck(self.status)
        self.invalid = InvalidWatch(self.status, model.frontend_config.window)
        self.rate = RateWatch(self.status, rate)
        # The wearer's mount reference outlives front-end resets (same board on the same body); a saved one
        # (`--mount-calibration FILE`) can be given, else it is learnt from this stream's moving windows.
        self.calibration: MountCalibration | None = None
        if model.mount is not None:
            self.calibration = calibration if calibration is not None else MountCalibration(model.mount)
            self.calibration.start_session()  # a saved calibration is checked against this stream's walking
            if not self.calibration.calibrated:
                seconds = model.mount.min_windows * model.frontend_config.hop / rate
                self.notify(f"mount not calibrated yet: labels are less accurate until the wearer has walked for "
                            f"about {seconds:.0f} s ({model.mount.min_windows} moving windows)")
        self.timers = StageTimers()
        self.offset = 0  # stream position of the front-end's first sample since its last reset
        self.windows = 0
        self.frontend_resets = 0
        self.link = {"connects": 0, "disconnects": 0, "reconnects": 0}
        self.hello: Hello | None = None
        self.aligned_flags: list[bool] = []  # k: which of the last windows were rotated (`align`)
        self.trusted_flags: list[bool] = []  # k: ... by a reference this stream's walking checked
        self.mount_states: list[str] = []  # k: where the calibration stood after each (MOUNT_STATES)
        self.window_gravity: list[Vector3] = []  # k: their gravity directions as cut (with a calibration)
        self._scale = (1.0 / model.std).astype(np.float32)  # (9,)
        self._offset = (model.mean * self._scale).astype(np.float32)  # (9,) mean folded through the scale
        self._matrix: tuple[tuple[float, float, float] | None, np.ndarray] | None = None  # (direction sum, (9, 9))
        self._held: list[np.ndarray] = []  # raw chunks (n, 6) of this segment not yet filtered
        self._filtered: list[np.ndarray] = []  # filtered chunks (n, 9) of this segment not yet windowed
        self._held_n = 0  # samples in both, not yet given to the sliding window
        self._since_reset = 0  # samples given to the front-end since its last reset
        self._last_sample: Sample | None = None  # the newest decoded sample (bytes sources), for `prewarm`
        self._prewarm_off = False  # a prewarm failed: not tried again
        self._last_sample_at: float | None = None  # arrival (perf_counter) of the newest item with samples
        self._arrival_mark: tuple[float, int] | None = None  # (arrival, stream position) a second or so ago
        self._arrival_rate: float | None = None  # samples per wall-clock second as they arrive (last second)
        # The least delay seen between the stream clock (position / rate) and arrival, over this and the last span:
        # a chunk read late (a batch) says nothing about when its samples came, a frame read as it came does.
        self._clock_offsets = [float("inf"), float("inf")]  # (last span's, this span's) min(arrival - position / rate)

    def warm_up(self) -> None:
        """Run the front-end code and the model once on throwaway data, so that the first live
        window does not pay for first-call allocations (a few milliseconds)."""
        cfg = self.model.frontend_config
        FrontEnd(cfg, self.model.filters).push(np.zeros((cfg.window, 6)))
        self.model.session.predict(np.zeros((1, cfg.window, len(self.model.mean)), dtype=np.float32))

    # -- the stages, in order -----------------------------------------------------------------
    def process(self, item: ByteChunk | SampleBlock | LinkEvent) -> list[dict[str, Any]]:
        """One source item -> the window results it completes, in stream order."""
        if isinstance(item, LinkEvent):
            self.on_link_event(item)
            if self.recorder is not None:
                self.recorder.tick()
            return []
        with self.timers.stage("pipeline") as whole:
            batch, hello_at = self.decode(item)
            n_samples = len(batch.seq) if isinstance(batch, SampleBlock) else len(batch)
            if n_samples and not isinstance(batch, SampleBlock):
                self._last_sample = batch[-1]  # what `prewarm` repeats
            restarts = self.gaps.counters.device_restarts
            results = self.windows_of(batch, hello_at, item.arrival)
            whole.items = len(results)
        if n_samples:
            self._note_arrival(item.arrival)
        self.watch(n_samples, item.arrival, restarts)
        return results

    def windows_of(self, batch: SampleBlock | list[Sample], hello_at: Sequence[int],
                   arrival: float) -> list[dict[str, Any]]:
        """Decoded samples -> the window results they complete, in stream order: gaps .. post-process."""
        results: list[dict[str, Any]] = []
        for segment in self.handle_gaps(batch, hello_at):
            if segment.reset:
                self.restart_windows(segment.start)
            windows, ends = self.filter_and_window(segment.raw)  # (k, 128, 9), (k,); k = 0 until a window is due
            if len(ends) == 0:
                continue
            matrices = self.align(windows)  # (k, 9, 9) or None
            logits = self.infer(self.normalize(windows, matrices), windows, matrices)  # (k, C)
            if self.postures is not None:
                logits = self.read_postures(logits, windows, ends)  # (k, C)
            results.extend(self.postprocess(logits, ends, arrival))
        return results

    def rehearsal(self) -> Callable[[], list[dict[str, Any]]] | None:
        """When the next sample completes a window: the call that runs the window path once on a throwaway copy
        of this stream's state, with the newest sample repeated as the window-completing one (a live source
        makes it just before the real sample is due: the prewarm); else None.

        Why: between two windows the process sleeps 1.28 s, and on waking every stage runs several times
        slower than warm (its code and data are out of the CPU's caches; on the 2-core VM of docs/results.md
        a pass took about 0.8 ms cold against 0.25 ms right after a rehearsal). The copy is taken in the call,
        not before: copying reads the stream's own state too, which its real pass then finds in the caches
        (taken 20 ms earlier, the real pass was slower by about 0.1 ms there). Nothing of the stream changes:
        the copy has its own state, no decoder or recorder, a silent `notify` and its own timers, and what it
        computes is dropped. It shares only what the window path reads and does not keep: the model (whose
        session is given its input anew on every call) and the wearer's profile. The call returns the copy's
        window results (none when it failed), for the main loop to rehearse their way out too (edge/loop.py)."""
        last = self._last_sample
        if last is None or self._prewarm_off or self.samples_until_window() != 1:
            return None
        period_us = round(1e6 / self.model.frontend_config.sample_rate_hz)
        repeat = replace(last, seq=(last.seq + 1) % SEQ_MODULO, t_us=(last.t_us + period_us) % T_US_MODULO)

        def rehearse() -> list[dict[str, Any]]:
            with self.timers.stage("prewarm", 1):  # items: rehearsals
                shared: dict[int, Any] = {id(self.model): self.model, id(self.profile): self.profile,
                                          id(self.notify): _silent, id(self.timers): StageTimers(),
                                          id(self.decoder): None, id(self.recorder): None}
                try:
                    return copy.deepcopy(self, shared).windows_of([repeat], (), time.perf_counter())
                except Exception as exc:  # only the copy failed; were it the stream's own path, its pass says so
                    self._prewarm_failed(exc)
                    return []
        return rehearse

    def _prewarm_failed(self, exc: Exception) -> None:
        self._prewarm_off = True
        self.notify(f"prewarm turned off for this stream ({type(exc).__name__}: {exc}); labels are unaffected, "
                    "only later by a fraction of a millisecond")

    def _note_arrival(self, arrival: float) -> None:
        """The rate at which samples arrive by the wall clock, over spans of about a second: a device (or a
        virtual one) streaming faster than real time makes the next window due sooner than its own clock says."""
        self._last_sample_at = arrival
        position = self.gaps.position
        offset = arrival - position / self.model.frontend_config.sample_rate_hz
        self._clock_offsets[1] = min(self._clock_offsets[1], offset)
        if self._arrival_mark is None:
            self._arrival_mark = (arrival, position)
        elif arrival - self._arrival_mark[0] >= 1.0:
            self._arrival_rate = (position - self._arrival_mark[1]) / (arrival - self._arrival_mark[0])
            self._arrival_mark = (arrival, position)
            self._clock_offsets = [self._clock_offsets[1], offset]

    def samples_until_window(self) -> int:
        """Samples still to come (after those held) before the front-end completes its next window."""
        cfg = self.model.frontend_config
        seen = self._since_reset
        next_end = cfg.window if seen < cfg.window else seen + cfg.hop - (seen - cfg.window) % cfg.hop
        return next_end - seen - self._held_n

    def next_window_due(self) -> float | None:
        """When (time.perf_counter()) the sample that completes the next window should arrive; None before any
        sample. The sooner of two estimates: the newest sample's arrival plus the missing samples at the fastest
        of the nominal, device and arrival rates, and the stream clock (position / nominal rate) shifted by its
        least-delayed arrival of the last two spans. For a live source that reads in batches until then
        (edge/loop.py): samples lost on the way only make the window later than this."""
        if self._last_sample_at is None:
            return None
        nominal = self.model.frontend_config.sample_rate_hz
        left = self.samples_until_window()
        # A fast device clock, or samples arriving faster than real time, make the window due sooner.
        rate = max(nominal, self.gaps.rate.rate_hz or nominal, self._arrival_rate or nominal)
        from_arrival = self._last_sample_at + left / rate  # late when the newest chunk was read late
        from_clock = min(self._clock_offsets) + (self.gaps.position + left) / nominal  # the stream clock's
        return min(from_arrival, from_clock)

    def watch(self, n_samples: int, arrival: float, restarts_before: int) -> None:
        """Status events from what this item brought (edge/status.py)."""
        position = self.gaps.position
        if n_samples:
            self.stall.samples(arrival, position)
        restarts = self.gaps.counters.device_restarts - restarts_before
        if restarts:
            self.status.say("device_restart", "the device restarted (its seq and clock started again); nothing "
                                              "lost, window restarted", stream_position=position, restarts=restarts)
        self.invalid.check(self.gaps.invalid_run, position)
        rate = self.gaps.rate
        self.rate.measured(rate.check(), rate.rate_hz, rate.off)

    def decode(self, item: ByteChunk | SampleBlock) -> tuple[SampleBlock | list[Sample], list[int]]:
        """ByteChunk -> decoder -> its samples (a list: a port gives a few at a time) and the indices of the
        samples that follow a HELLO; a SampleBlock is already decoded."""
        if isinstance(item, SampleBlock):
            return item, []
        if not isinstance(item, ByteChunk):
            raise EdgeError(f"a source gave {type(item).__name__}; expected ByteChunk, SampleBlock or LinkEvent")
        if self.decoder is None:  # bytes without a decoder given: the binary protocol
            from firmware_bridge.protocol import FrameDecoder

            self.decoder = FrameDecoder()
        with self.timers.stage("decode") as stage:
            samples: list[Sample] = []
            hello_at: list[int] = []
            for frame in self.decoder.feed(item.data):
                if hasattr(frame, "seq"):
                    samples.append(frame)
                else:
                    if hasattr(frame, "rate_hz"):
                        hello_at.append(len(samples))
                    self.on_device_message(frame)
            self.mode_check.feed(item.data, self.decoder, len(samples))
            if self.recorder is not None:
                self.recorder.record_bytes(item.data)
                self.recorder.record_samples(*samples_to_arrays(samples))
            stage.items = len(samples)
        return samples, hello_at

    def handle_gaps(self, batch: SampleBlock | list[Sample], hello_at: Sequence[int] = ()) -> list[Segment]:
        """The gap handler learns of each HELLO right before the sample that followed it (a boot HELLO
        tells a reboot from a late duplicate)."""
        segments: list[Segment] = []
        n = len(batch.seq) if isinstance(batch, SampleBlock) else len(batch)
        with self.timers.stage("gaps", n):
            begin = 0
            for at in (*hello_at, n):
                if isinstance(batch, SampleBlock):
                    segments += self.gaps.push(batch.seq[begin:at], batch.t_us[begin:at], batch.raw[begin:at])
                else:
                    segments += self.gaps.push_samples(batch if at - begin == n else batch[begin:at])
                if at < n:
                    self.gaps.note_hello()
                begin = at
        return segments

    def restart_windows(self, start: int) -> None:
        """A new segment (stream start, long gap, reconnect): fresh filters, window, smoothing."""
        if self.offset or self.windows or self._since_reset or self._held_n:
            self.frontend_resets += 1
        self.frontend.reset()
        self.smoother.reset()
        if self.rise_tracker is not None:
            self.rise_tracker.reset()
        self.offset = start
        # Samples held back for the old segment completed no window: nothing is lost by dropping them.
        self._held, self._filtered, self._held_n, self._since_reset = [], [], 0, 0

    def filter_and_window(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Filter and window, but only when a window is due.

        The front-end gives bit-identical output for any chunking of its input, so samples are
        held back until the next window end and then filtered in one call: one front-end call
        per hop instead of one per sample (a call costs about the same for 1 or 64 samples).
        A live loop calls `filter_held` while its source waits, so that only the samples read
        with the window-completing one are left to filter when it comes."""
        self._held.append(raw)
        self._held_n += len(raw)
        if self.samples_until_window() > 0:
            return _NO_WINDOWS, NO_ENDS
        n, self._held_n = self._held_n, 0
        self._since_reset += n
        with self.timers.stage("frontend", n):
            self._filter_held()
            parts, self._filtered = self._filtered, []
            channels = parts[0] if len(parts) == 1 else np.concatenate(parts)  # (n, 9)
            windows, ends = self.frontend.window.push(channels)  # (k, 128, 9) float32, (k,) since the last reset
        return windows, ends

    def filter_held(self) -> None:
        """Filter the samples held for the next window now: the live loop calls this before its source waits
        for more, so the window-completing sample is filtered alone (and the rest is done while idle)."""
        if self._held:
            with self.timers.stage("frontend"):
                self._filter_held()

    def _filter_held(self) -> None:
        if self._held:
            chunk = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)  # (n, 6)
            self._held = []
            self._filtered.append(self.frontend.filter.push(chunk))  # (n, 9) float32

    def align(self, windows: np.ndarray) -> np.ndarray | None:
        """Mount alignment: each window first feeds the wearer's reference, then is rotated by it.
        -> (k, 9, 9) per window the matrix that rotates its triplets and applies the normalization scale
        (`normalize` applies it: one matrix product per window), or None while nothing is rotated.
        `self.aligned_flags` (k,) says which windows were rotated (calibrated), for the profile stage."""
        self.aligned_flags = self.trusted_flags = [False] * len(windows)
        self.mount_states = [MOUNT_STATES[0]] * len(windows)
        if self.calibration is None:
            return None
        with self.timers.stage("align", len(windows)):
            was_calibrated = self.calibration.calibrated
            aligning, sums, _ = self.calibration.update_many(windows)  # k flags, k direction sums (or None)
            self.mount_states = self.calibration.last_states
            self.trusted_flags = [a and state == "checked" for a, state in zip(aligning, self.mount_states)]
            self.window_gravity = self.calibration.last_gravity
            if self.calibration.calibrated and not was_calibrated:
                self.notify(f"mount calibrated from {self.calibration.config.min_windows} moving windows; "
                            "windows are aligned from now on")
            if self.calibration.remounted is not None:  # re-learnt from the session's first min_windows
                self.notify(f"mount moved by {self.calibration.remounted:.0f} degrees from the saved calibration "
                            f"(the board was re-mounted): re-learnt from this stream's "
                            f"{self.calibration.config.min_windows} moving windows")
            self.aligned_flags = aligning
            if not any(aligning):
                return None  # nothing is rotated before the calibration
            if len(windows) == 1:  # the live path: the (cached) matrix itself, no stacking
                return self._rotate_and_scale(sums[0])[None]  # (1, 9, 9)
            return np.stack([self._rotate_and_scale(direction_sum) for direction_sum in sums])  # (k, 9, 9)

    def _rotate_and_scale(self, direction_sum: tuple[float, float, float] | None) -> np.ndarray:
        """(9, 9) float32: channels @ M == (each triplet rotated by the wearer's reference) * scale, for the
        reference whose unit directions sum to `direction_sum` (identity while None: not rotated); recomputed
        only when the reference changed (a re-mount can re-learn it with the same window count, so keyed by
        the sum)."""
        assert self.calibration is not None  # align() calls this only with a calibration
        if self._matrix is None or self._matrix[0] != direction_sum:
            rotation = np.eye(3) if direction_sum is None else reference_rotation(direction_sum, self.calibration.config)
            self._matrix = (direction_sum, triplet_matrix(rotation, self._scale, np.float32))  # (9, 9)
        return self._matrix[1]

    def normalize(self, windows: np.ndarray, matrices: np.ndarray | None = None) -> np.ndarray:
        """(k, 128, 9) -> normalized (k, 128, 9) float32: (x - mean) / std, or with `matrices` (k, 9, 9)
        from `align`, x @ M - mean / std (the rotation and the scale in one product)."""
        with self.timers.stage("normalize", len(windows)):
            x: np.ndarray
            if matrices is None:
                x = ((windows - self.model.mean) * self._scale).astype(np.float32, copy=False)  # (k, 128, 9)
            else:
                x = np.matmul(windows, matrices)  # (k, 128, 9) @ (k, 9, 9)
                x -= self._offset
        return x

    def infer(self, x: np.ndarray, windows: np.ndarray, matrices: np.ndarray | None = None) -> np.ndarray:
        """x (k, 128, 9) normalized -> logits (k, C); with a profile, corrected by it from the model's features
        and the windows as the model saw them (aligned, un-normalized: `windows` (k, 128, 9) rotated by
        `matrices` (k, 9, 9) from `align` without their normalization scale)."""
        if self.profile is None:
            with self.timers.stage("inference", len(x)):
                return np.asarray(self.model.session.predict(x))  # (k, C)
        with self.timers.stage("inference", len(x)):
            # A profile is only loaded for a bundle with the features output (edge.enroll.load_profile checks).
            session = cast("FeatureSession", self.model.session)
            logits, features = session.predict_with_features(x)  # (k, C), (k, F)
        with self.timers.stage("profile", len(x)):
            aligned = windows if matrices is None else np.matmul(windows, matrices / self._scale)  # (k, 128, 9)
            return self.profile.apply(logits, features, aligned, np.array(self.aligned_flags, bool),
                                      np.array(self.trusted_flags, bool))  # (k, C)

    def read_postures(self, logits: np.ndarray, windows: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """logits (k, C), windows (k, 128, 9) as cut, ends (k,) -> (k, C) with SITTING / STANDING read against
        this stream's own postures wherever the mount reference is not yet checked (edge/posture.py)."""
        assert self.postures is not None and self.rise_tracker is not None  # process() calls this with the rule on
        if all(self.trusted_flags):  # align() set them for these windows
            # Every window aligned by a checked reference: the model's (the live path once walked). A checked
            # reference stays checked for the session, so the rise tracker has nothing more to do in it either
            # (were it needed again, the gap in its windows would restart it).
            self.window_rises = [NO_RISE] * len(logits)
            return logits
        with self.timers.stage("postures", len(logits)):
            tracker = self.rise_tracker
            self.window_rises = [tracker.push(w, e) for w, e in zip(windows, ends.tolist())]  # k, in stream order
            # align() leaves each window's gravity direction when a calibration ran on them; without one, computed.
            gravity = self.window_gravity if self.calibration is not None else gravity_directions(windows).tolist()
            return self.postures.decide(logits, gravity, self.trusted_flags, self.window_rises)  # k of each

    def postprocess(self, logits: np.ndarray, ends: np.ndarray, arrival: float) -> list[dict[str, Any]]:
        """logits (k, C), ends (k,) -> one window result per end (smoothed label, probabilities, latency)."""
        with self.timers.stage("postprocess", len(ends)):
            probs = softmax_rows(logits.tolist())  # k lists of C floats (plain floats: one window at a time live)
            decisions = self.smoother.push(probs)
            results = [
                window_result(self.offset + end, decision, round6(p), self.classes, arrival)
                for end, decision, p in zip(ends.tolist(), decisions, probs)
            ]
            if self.rate.device_rate_hz is not None:  # the model expects its own rate: these labels are suspect
                for result in results:
                    result["device_rate_hz"] = self.rate.device_rate_hz
            self.windows += len(results)
        return results

    # -- events -------------------------------------------------------------------------------
    def on_link_event(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self.link["connects"] += 1
            self.stall.connected(event.at)
            if event.outage_s > 0 or self.link["disconnects"]:
                self.link["reconnects"] += 1
                self.status.say("reconnected", f"{event.port} is back after {event.outage_s:.1f} s; front-end and "
                                               "window restart", outage_s=round(event.outage_s, 3))
            else:
                self.status.say("connected", f"reading {event.port}")
            # The outage as the host saw it keeps stream positions close to device time.
            self.gaps.restart(skipped=int(round(event.outage_s * self.model.frontend_config.sample_rate_hz)))
            if self.decoder is not None and hasattr(self.decoder, "reset_sequence"):
                self.decoder.reset_sequence()
        elif event.kind == "lost":
            self.link["disconnects"] += 1
            self.stall.disconnected()
            self.status.say("disconnected", f"lost the device: {event.detail}; reconnecting with back-off",
                            stream_position=self.gaps.position)
        elif event.kind == "idle":
            self.stall.check(event.at, self.gaps.position)
        elif event.kind == "waiting":
            self.notify(f"waiting for the device: {event.detail}")

    def on_device_message(self, frame: Hello | Log) -> None:
        if isinstance(frame, Hello):
            self.hello = frame
            self.rate.hello(frame.rate_hz)
        else:  # Log
            self.notify(f"device: {getattr(frame, 'text', frame)}")

    def counters(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "windows": self.windows,
            "stream_position": self.gaps.position,
            "frontend_resets": self.frontend_resets,
            "gaps": self.gaps.counters.as_dict(),
            "link": dict(self.link),
            "rate_hz": None if self.gaps.rate.rate_hz is None else round(self.gaps.rate.rate_hz, 3),
            "rate_warnings": self.gaps.rate.warnings,
            "status": self.status.as_dict(),
        }
        if self.calibration is not None:
            out["mount"] = {"calibrated": self.calibration.calibrated, "moving_windows": self.calibration.windows}
        if self.postures is not None:
            out["postures"] = {"read": self.postures.read, "swapped": self.postures.swapped,
                               "rises": self.postures.rises, "stilled": self.postures.stilled,
                               "relaid": self.postures.relaid}
        if self.decoder is not None:
            out["decoder"] = self.decoder.counters.as_dict()
        return out


