"""Where samples come from: a serial port (live) or a recording (replay).

A source is an iterator of items, each one of
- `ByteChunk`: bytes as they arrived from the port, stamped with their arrival time
  (`time.perf_counter()`), still to be decoded by the runtime;
- `SampleBlock`: already decoded samples (replay of a recording);
- `LinkEvent`: the port came up or went away, or ("idle") nothing came for a while.

`SerialSource` owns the pyserial port in the thread that iterates it (the main loop's): it reads
what is waiting or blocks for one byte and takes the rest of the frame with it, as pyserial's
`serial.threaded.ReaderThread` does, but hands the bytes straight to the caller instead of through
a second thread and a queue (that hand-off cost more CPU and latency per frame than the pipeline's
work on it; the kernel's tty buffer holds what arrives meanwhile). It does not die with the port:
when the device is unplugged or the port vanishes it reports `LinkEvent("lost")` and reopens the
port with exponential back-off until it is back (`LinkEvent("connected")`).

Pacing: at 50 Hz a frame arrives every 20 ms, and a wake-up per frame costs far more CPU than the
pipeline's work on it. The main loop says when the next window's last sample is due (`hold_until`);
until shortly before then the source sleeps and then takes everything waiting in one read, so a
window costs a few wake-ups instead of 64, while the frames that complete a window are still read
the moment they come. Given a `prewarm` too, the source wakes a prewarm's time before the window-completing
frame is due, calls it (the pipeline's rehearsal of the window path, which brings its code and data back
into the CPU's caches) and then polls the port until the frame comes, instead of sleeping in a read that
would let the caches go cold again (edge/pipeline.py, `Pipeline.rehearsal`).
"""

from __future__ import annotations

import errno
import select
import time
from collections import deque
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from edge.gaps import samples_to_arrays

if TYPE_CHECKING:
    from serial import Serial

    from firmware_bridge.protocol import Sample


@dataclass
class ByteChunk:
    data: bytes
    arrival: float  # time.perf_counter() when read() returned


@dataclass
class SampleBlock:
    seq: np.ndarray  # (n,) int64
    t_us: np.ndarray  # (n,) int64
    raw: np.ndarray  # (n, 6) float64
    arrival: float


@dataclass
class LinkEvent:
    kind: str  # "connected" | "lost" | "waiting"
    port: str
    detail: str = ""
    outage_s: float = 0.0  # for "connected" after a loss: how long the port was gone
    at: float = field(default_factory=time.perf_counter)


class SourceError(OSError):
    """A source that cannot deliver (e.g. the port never appeared within the timeout)."""


@dataclass(frozen=True)
class Backoff:
    """Exponential back-off between reconnect attempts."""

    initial_s: float = 0.1
    factor: float = 2.0
    maximum_s: float = 2.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        while True:
            yield delay
            delay = min(self.maximum_s, delay * self.factor)


def describe_serial_error(port: str, exc: BaseException) -> str:
    """A message that says what went wrong with the port and what to do about it."""
    err = getattr(exc, "errno", None)
    text = str(exc)
    if err == errno.EACCES or "Permission denied" in text:
        return (
            f"permission denied on {port}: add this user to the 'dialout' group "
            "(sudo usermod -aG dialout $USER, then log in again) or install deploy/99-har-imu.rules"
        )
    if err == errno.EISDIR or "Is a directory" in text:
        return f"{port} is a folder, not a serial port; give --port the board's device (`har-edge ports` lists them)"
    if err == errno.ENOENT or "No such file" in text or "could not open port" in text:
        return f"{port} is not there ({text}); is the IMU board plugged in? (ls /dev/ttyACM* /dev/ttyUSB*)"
    if err == errno.ENOTTY or "Inappropriate ioctl" in text:
        return f"{port} is not a serial port ({text}); give --port the board's device (`har-edge ports` lists them)"
    return f"{port}: {text}"


# The source wakes this long before the window-completing sample is due (1.5 samples at 50 Hz: a device clock
# 2% fast still finds it awake), and sleeps at most MAX_HOLD_S at a time: the kernel's tty buffer (4 KiB) holds
# 2 s of frames, and an unplugged port is noticed within that time.
WAKE_EARLY_S = 0.03
MAX_HOLD_S = 0.5
# A prewarm starts as long before the frame is due as the median of the last PREWARM_HISTORY ones took, plus
# PREWARM_MARGIN_S (the estimate of when the frame comes was within 0.3 ms on the VM of docs/results.md, where
# a prewarm takes about 1-1.5 ms); the first one PREWARM_FIRST_S before. The source polls until SPIN_LATE_S after
# the frame was due at most (a late frame, or none: then it blocks in the read as before).
PREWARM_FIRST_S = 0.003
PREWARM_MARGIN_S = 0.0004
PREWARM_HISTORY = 8
SPIN_LATE_S = 0.003
IDLE_EVERY_S = 0.2  # while waiting for the port to come back: an "idle" event this often (counters, --duration)


class SerialSource:
    """Live bytes from a serial port, read in the iterating thread, reconnecting on loss."""

    def __init__(
        self,
        port: str,
        baud: int = 115200,
        backoff: Backoff = Backoff(),
        connect_timeout_s: float | None = None,
        open_port: Callable[[], Serial] | None = None,
        max_hold_s: float = MAX_HOLD_S,
    ):
        self.port, self.baud, self.backoff = port, baud, backoff
        # Bytes held in the tty buffer die with it when the port vanishes (a USB unplug, a pty hangup: up to
        # max_hold_s of samples, not in the stream). `record` passes 0: a recording keeps every byte it can.
        self.max_hold_s = max_hold_s
        self.connect_timeout_s = connect_timeout_s
        self._open_port = open_port or self._default_open
        self._open = True  # until close()
        # perf_counter time the consumer's next window-completing frame is due (0.0: none): the source need not
        # read before WAKE_EARLY_S ahead of it
        self._due = 0.0
        self._prewarm: Callable[[], object] | None = None  # hold_until's, until called (what it returns is dropped)
        self._prewarm_took: deque[float] = deque(maxlen=PREWARM_HISTORY)  # seconds, the last prewarms
        self._serial: Serial | None = None
        self.connects = 0  # times the port opened (0 after a run: it never did)
        self.reconnects = 0
        self.disconnects = 0
        self.bytes_read = 0
        # What became of each prewarm handed over (hold_until): run before its frame, or not, because the frame was
        # already there (the device ahead of the estimate: a loaded host, a device clock running fast).
        self.prewarms_run = 0
        self.prewarms_frame_early = 0

    def _default_open(self) -> Serial:
        import serial  # pyserial: part of the base dependencies

        # exclusive=True: a second reader on the same port would steal bytes from this one. The timeout is
        # how long a silent port blocks a read before the source says "idle".
        return serial.serial_for_url(self.port, baudrate=self.baud, timeout=IDLE_EVERY_S, exclusive=True)

    def hold_until(self, due: float | None, prewarm: Callable[[], object] | None = None) -> None:
        """The consumer needs no bytes before `due` (time.perf_counter(); None: read as they come): the source
        sleeps until WAKE_EARLY_S before it and then reads everything waiting at once. `prewarm`: the next
        frame completes a window; call this just before it is due and poll for the frame after."""
        self._due = 0.0 if due is None else due
        self._prewarm = None if due is None else prewarm

    def __iter__(self) -> Iterator[ByteChunk | LinkEvent]:
        lost_at: float | None = None
        started = time.perf_counter()
        ever_connected = False
        try:
            while self._open:
                port = yield from self._connect(started if not ever_connected else None)
                if port is None:
                    return
                outage = 0.0 if lost_at is None else time.perf_counter() - lost_at
                if ever_connected:
                    self.reconnects += 1
                ever_connected = True
                self.connects += 1
                yield LinkEvent("connected", self.port, outage_s=outage)
                error = yield from self._read_until_lost(port)
                self._close_port()
                if error is None:  # closed
                    return
                self.disconnects += 1
                lost_at = time.perf_counter()
                yield LinkEvent("lost", self.port, detail=describe_serial_error(self.port, error))
        finally:
            self._close_port()

    def _connect(self, started: float | None) -> Generator[LinkEvent, None, Serial | None]:
        """Open the port, retrying with back-off (saying "idle" while it waits) -> the port, None when closed;
        SourceError when the port did not appear within connect_timeout_s."""
        delays = self.backoff.delays()
        last_message = None
        while self._open:
            try:
                self._serial = self._open_port()
                return self._serial
            except Exception as exc:  # pyserial raises SerialException (an IOError) or ValueError
                message = describe_serial_error(self.port, exc)
                if message != last_message:
                    yield LinkEvent("waiting", self.port, detail=message)
                    last_message = message
                if started is not None and self.connect_timeout_s is not None \
                        and time.perf_counter() - started > self.connect_timeout_s:
                    raise SourceError(f"gave up after {self.connect_timeout_s:g} s: {message}") from None
                wake = time.perf_counter() + next(delays)
                while self._open and (left := wake - time.perf_counter()) > 0:
                    time.sleep(min(left, IDLE_EVERY_S))
                    yield LinkEvent("idle", self.port)
        return None

    def _read_until_lost(self, port: Serial) -> Generator[ByteChunk | LinkEvent, None, BaseException | None]:
        """Chunks as they are read -> the error that ended them, None when closed."""
        while self._open:
            try:
                hold = min(self._due - WAKE_EARLY_S - time.perf_counter(), self.max_hold_s)
                # The consumer needs no bytes yet: let them gather in the port's buffer. Not when some are
                # waiting already: the device is ahead of the estimate (or the consumer behind it).
                if hold > 0 and not port.in_waiting:
                    time.sleep(hold)
                if self._prewarm is not None:
                    self._warm_then_poll(port)
                # Everything waiting, or block (up to the port's timeout) for one byte and then take what came with
                # it: a frame is written at once, but the blocking read returns on its first byte.
                data = port.read(port.in_waiting or 1)
                if len(data) == 1 and port.in_waiting:
                    data += port.read(port.in_waiting)
            except Exception as exc:  # SerialException / OSError(EIO) when the device vanishes
                return exc
            if data:
                self.bytes_read += len(data)
                yield ByteChunk(bytes(data), time.perf_counter())
            else:
                yield LinkEvent("idle", self.port)  # lets the loop print counters on a silent port
        return None

    def _warm_then_poll(self, port: Serial) -> None:
        """Wait (woken by the frame if it comes early) until a prewarm's time before it is due, prewarm, and
        poll the port until it comes or SPIN_LATE_S after it was due. A port without a file descriptor (some
        of pyserial's URL handlers) is read as before, without."""
        prewarm, self._prewarm = self._prewarm, None
        assert prewarm is not None  # the caller checked
        fileno = getattr(port, "fileno", None)
        if fileno is None:
            return
        took = sorted(self._prewarm_took)
        lead = (took[len(took) // 2] if took else PREWARM_FIRST_S) + PREWARM_MARGIN_S
        wait = self._due - lead - time.perf_counter()
        if wait > 0 and not port.in_waiting:
            # Woken by the frame's first byte, as the blocking read would be (so not capped by max_hold_s:
            # nothing gathers in the buffer meanwhile); MAX_HOLD_S bounds a due time far off.
            select.select([fileno()], [], [], min(wait, MAX_HOLD_S))
        if port.in_waiting:  # the frame came early: read it now
            self.prewarms_frame_early += 1
            return
        started = time.perf_counter()
        prewarm()
        self._prewarm_took.append(time.perf_counter() - started)
        self.prewarms_run += 1
        give_up = self._due + SPIN_LATE_S
        while not port.in_waiting and time.perf_counter() < give_up:
            pass

    def _close_port(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except Exception:  # closing a vanished port may fail too; it is gone either way
                pass

    def close(self) -> None:
        self._open = False
        self._close_port()


class RecordingSource:
    """Samples of a recording as `SampleBlock`s: as fast as possible, or paced at `rate_hz`."""

    def __init__(self, samples: Sequence[Sample], block: int = 4096, realtime: bool = False, rate_hz: float = 50.0):
        self.seq, self.t_us, self.raw = samples_to_arrays(samples)  # (n,), (n,), (n, 6)
        self.block = max(1, int(block))
        self.realtime = realtime
        self.rate_hz = rate_hz

    def __len__(self) -> int:
        return len(self.seq)

    def __iter__(self) -> Iterator[SampleBlock]:
        n = len(self.seq)
        if not self.realtime:
            for i in range(0, n, self.block):
                j = min(n, i + self.block)
                yield SampleBlock(self.seq[i:j], self.t_us[i:j], self.raw[i:j], time.perf_counter())
            return
        # Real time: one sample per tick on an absolute schedule (no drift from sleep overshoot).
        period = 1.0 / self.rate_hz
        t0 = time.perf_counter()
        for i in range(n):
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield SampleBlock(self.seq[i:i + 1], self.t_us[i:i + 1], self.raw[i:i + 1], time.perf_counter())

    def close(self) -> None:
        pass


class ByteFileSource:
    """A raw capture of serial bytes, replayed in chunks (decoded by the runtime)."""

    def __init__(self, path: str, chunk: int = 65536):
        self.path, self.chunk = path, chunk

    def __iter__(self) -> Iterator[ByteChunk]:
        with open(self.path, "rb") as f:
            while data := f.read(self.chunk):
                yield ByteChunk(data, time.perf_counter())

    def close(self) -> None:
        pass


# USB ids of the boards the firmware runs on (the same list as deploy/99-har-imu.rules).
IMU_USB_IDS: dict[tuple[int | None, int | None], str] = {
    (0x2341, 0x0043): "Arduino Uno R3",
    (0x2341, 0x0001): "Arduino Uno",
    (0x1A86, 0x7523): "CH340 USB-serial (Uno / Nano clone)",
}


@dataclass(frozen=True)
class PortInfo:
    device: str
    description: str
    vid: int | None
    pid: int | None
    serial_number: str | None

    @property
    def looks_like_imu(self) -> bool:
        return (self.vid, self.pid) in IMU_USB_IDS

    def describe(self) -> str:
        ids = f"{self.vid:04x}:{self.pid:04x}" if self.vid is not None and self.pid is not None else "no USB id"
        board = f"  <- looks like the IMU board ({IMU_USB_IDS[(self.vid, self.pid)]})" if self.looks_like_imu else ""
        serial_number = f" serial {self.serial_number}" if self.serial_number else ""
        return f"{self.device}  {ids}{serial_number}  {self.description}{board}"


def list_ports() -> list[PortInfo]:
    """The serial ports pyserial finds (serial.tools.list_ports), with their USB ids."""
    from serial.tools import list_ports as pyserial_ports

    return [PortInfo(p.device, p.description or "", p.vid, p.pid, p.serial_number)
            for p in sorted(pyserial_ports.comports(), key=lambda p: p.device)]


def find_imu_port(ports: list[PortInfo] | None = None) -> str:
    """--port auto: the one port whose USB id is an IMU board's; SourceError when none or several."""
    ports = list_ports() if ports is None else ports
    imu = [p for p in ports if p.looks_like_imu]
    if len(imu) == 1:
        return imu[0].device
    if not imu:
        seen = ", ".join(p.device for p in ports) or "no serial ports at all"
        raise SourceError(f"--port auto: no port looks like the IMU board ({seen}); plug it in, or give --port "
                          "(`har-edge ports` lists them)")
    raise SourceError(f"--port auto: {len(imu)} ports look like the IMU board ({', '.join(p.device for p in imu)}); "
                      "give --port explicitly")
