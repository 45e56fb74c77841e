"""Status events: what the runtime must say about the stream, once, in three places.

Each event is said once when it happens (and again only when it changes): as one line on stderr
(`har-edge: ...`), as a JSON line among the window lines (`{"type": "status", ...}`, see
docs/edge.md, "Status events") and as a count in the counters (`counters["status"]`).

    status = StatusEvents(notify)
    status.say("stall", "no samples for 10 s ...", stream_position=1234)
    for event in status.take():   # the JSON objects not yet written to the sinks
        ...

The detectors here watch what the pipeline sees and say:
- `stall` / `resumed`: no samples for `stall_after_s` seconds while the port is open, then samples again;
- `wrong_mode` / `unreadable`: the first bytes decode to nothing: text read as frames, frames read
  as text (`--text`), or neither (wrong baud rate, not the IMU board);
- `invalid_samples`: a window's worth of samples in a row were all invalid (NaN, beyond the sensor);
- `rate_announced`, `rate_off`, `rate_ok`: the device's rate (from its HELLO, or measured from its
  clock) differs from the model's, or is back.
The pipeline says the others (`connected`, `disconnected`, `reconnected`, `device_restart`).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder

EVENTS = ("connected", "disconnected", "reconnected", "device_restart", "stall", "resumed", "wrong_mode",
          "unreadable", "invalid_samples", "rate_announced", "rate_off", "rate_ok")
MODE_CHECK_BYTES = 512  # bytes without a single sample before the bytes are judged


class StatusEvents:
    """Counts, prints and queues status events for the JSONL sinks."""

    def __init__(self, notify: Callable[[str], None]):
        self.notify = notify
        self.counts: Counter[str] = Counter()
        self._pending: list[dict[str, Any]] = []

    def say(self, event: str, message: str, **fields: Any) -> None:
        assert event in EVENTS, event  # a new event type must be documented (docs/edge.md) first
        self.counts[event] += 1
        self.notify(message)
        self._pending.append({"type": "status", "event": event, "message": message, "t": time.time(), **fields})

    def take(self) -> list[dict[str, Any]]:
        """Events not yet handed to the sinks, oldest first."""
        events, self._pending = self._pending, []
        return events

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


class StallWatch:
    """`stall` when no sample arrived for `after_s` seconds on an open port; `resumed` when they come back."""

    def __init__(self, status: StatusEvents, after_s: float = 10.0):
        self.status, self.after_s = status, after_s
        self.last_sample: float | None = None  # perf_counter of the last sample's arrival (or of connecting)
        self.stalled_since: float | None = None

    def connected(self, now: float) -> None:
        self.last_sample, self.stalled_since = now, None

    def disconnected(self) -> None:
        self.last_sample = self.stalled_since = None  # a lost port is said as such, not as a stall

    def samples(self, now: float, position: int) -> None:
        if self.stalled_since is not None and self.last_sample is not None:
            self.status.say("resumed", f"samples again after {now - self.last_sample:.1f} s without any",
                            stream_position=position)
            self.stalled_since = None
        self.last_sample = now

    def check(self, now: float, position: int) -> None:
        if self.last_sample is None or self.stalled_since is not None or now - self.last_sample < self.after_s:
            return
        self.stalled_since = self.last_sample + self.after_s
        self.status.say("stall", f"no samples for {self.after_s:g} s although the port is open: is the board "
                                 "running? (check its power, its sensor wiring, and that nothing else reads the port)",
                        stream_position=position)


class ModeCheck:
    """Judges the first bytes once when they give no sample: the other mode, or neither."""

    def __init__(self, status: StatusEvents):
        self.status = status
        self.done = False
        self._start = bytearray()

    def feed(self, data: bytes, decoder: FrameDecoder | CsvLineDecoder, samples: int) -> None:
        if self.done:
            return
        if samples:
            self.done = True
            return
        self._start += data[:MODE_CHECK_BYTES]
        if len(self._start) < MODE_CHECK_BYTES:
            return
        self.done = True
        head = bytes(self._start[:MODE_CHECK_BYTES])
        if isinstance(decoder, CsvLineDecoder):
            probe = FrameDecoder()
            probe.feed(head)
            if probe.counters.frames:
                self.status.say("wrong_mode", f"the bytes look like binary frames ({probe.counters.frames} valid "
                                              f"in the first {len(head)} bytes), not text lines: drop --text")
                return
            what = "line of 6 or 7 numbers"
        else:
            text = CsvLineDecoder()
            text.feed(head)
            if text.counters.samples:
                self.status.say("wrong_mode", f"the bytes look like text lines ({text.counters.samples} sample "
                                              f"lines in the first {len(head)} bytes), not binary frames: add --text")
                return
            what = "frame"
        self.status.say("unreadable", f"no valid {what} in the first {len(head)} bytes: check --baud (the firmware "
                                      "sends at 115200) and that this port is the IMU board")


class InvalidWatch:
    """`invalid_samples` once a window's worth of samples in a row were all invalid (said again only
    after valid samples came in between)."""

    def __init__(self, status: StatusEvents, window: int):
        self.status, self.window = status, window
        self.said = False

    def check(self, invalid_run: int, position: int) -> None:
        if invalid_run == 0:
            self.said = False
        elif invalid_run >= self.window and not self.said:
            self.said = True
            self.status.say("invalid_samples", f"{self.window} samples in a row were all invalid (NaN, infinite, or "
                                               "beyond +-16 g / +-35 rad/s), so no window can be labelled: check the "
                                               "sensor wiring and that the firmware sends g and rad/s",
                            stream_position=position)


class RateWatch:
    """The device's rate against the model's: said once per change, whether announced or measured."""

    def __init__(self, status: StatusEvents, expected_hz: float, tolerance: float = 0.02):
        self.status, self.expected, self.tolerance = status, expected_hz, tolerance
        self.announced: int | None = None  # the last HELLO's rate_hz
        self.device_rate_hz: float | None = None  # the off rate windows are flagged with, None when on rate

    def _off(self, rate: float) -> bool:
        return abs(rate / self.expected - 1.0) > self.tolerance

    def hello(self, rate_hz: int) -> None:
        if not rate_hz or rate_hz == self.announced:
            return
        was_off = self.announced is not None and self._off(self.announced)
        self.announced = rate_hz
        if self._off(rate_hz):
            self.device_rate_hz = float(rate_hz)
            self.status.say("rate_announced", f"warning: the device announces {rate_hz} Hz but the model expects "
                                              f"{self.expected:g} Hz; labels are unreliable (windows are marked "
                                              "device_rate_hz)", rate_hz=rate_hz)
        elif was_off:
            self.device_rate_hz = None
            self.status.say("rate_ok", f"the device now announces {rate_hz} Hz, as the model expects", rate_hz=rate_hz)

    def measured(self, message: str | None, rate_hz: float | None, off: bool) -> None:
        """`message`: what the rate estimator said when its judgement changed (None: no change)."""
        if message is None or rate_hz is None:
            return
        if off:
            self.device_rate_hz = round(rate_hz, 2)
            if self.announced is not None and self._off(self.announced) \
                    and abs(rate_hz / self.announced - 1.0) <= self.tolerance:
                return  # the device said so already in its HELLO: once is enough
            self.status.say("rate_off", message, rate_hz=round(rate_hz, 3))
        else:
            if self.announced is None or not self._off(self.announced):
                self.device_rate_hz = None
            self.status.say("rate_ok", message, rate_hz=round(rate_hz, 3))
