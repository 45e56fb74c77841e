"""A virtual IMU device: a pure, seeded fault stream (`FaultStream`) played on a pseudo-terminal
(`VirtualDevice`) as protocol frames (or text lines).

    faults = Faults(drop=0.01, reboot_at=(60.0,), seed=1)
    with VirtualDevice("acc_exp01_user01.txt", faults, speed=20) as dev:
        port = dev.port          # /dev/pts/N, or the stable link if one was asked for
        ...                      # open it with pyserial like a real device
        dev.wait()
        print(dev.injected)      # what was dropped / corrupted / duplicated / injected

    stream = FaultStream(values, faults)      # no pty: the same bytes, for tests of the receiver
    data = b"".join(step.data for step in stream if isinstance(step, Chunk))

Behaviour (also in PROTOCOL.md, "Virtual device"):
- The device is a fresh device: seq counts from 0 and t_us from 0 at 1 / rate_hz per sample
  (20 ms at 50 Hz); the values come from the recording (looped with ``loop=True``, or until
  ``samples`` stream samples when that is given).
- Frame mode starts every connection with a 0x00 and a HELLO, then a HELLO every 5 s of
  stream time. HELLO frames are never faulted. Text mode sends ``t_ms,ax,ay,az,gx,gy,gz``
  lines and no HELLO. Frames come from the protocol's own encoder.
- All times (stall_at, stall_for, disconnect_every, disconnect_for, reboot_at) are stream
  seconds; at ``speed`` N they last 1/N as long on the wall clock.
- Faults (`Faults`), decided per sample with ``random.Random(seed)``, in this order: garbage
  (a burst of 1-16 random non-zero bytes and a 0x00 before the frame; letters and a newline in
  text mode), drop (not sent), corrupt (one bit flipped before COBS, so the receiver sees
  exactly one CRC error; in text mode one character replaced, so one bad line), duplicate (an
  intact frame sent twice). A stall stops the stream (nothing lost). A reboot (``reboot_at``)
  is what an Uno does when its main chip resets while its USB chip keeps the port open: a 0x00,
  a boot HELLO, and seq and t_us start again from 0 (nothing lost). A disconnect (unplug)
  closes the pty and removes the link (after the reader has read what was already sent); the
  device keeps running, so samples of the disconnected span are lost (seq jumps over them);
  then a new pty appears and the link points to it.
- The pty end (`VirtualDevice`) never writes while no reader has the pty open: it waits for a
  reader before the first byte and whenever the reader goes away, and its stream clock stands
  still meanwhile, so nothing is lost before the reader opens the port. After a reader
  appears it waits 0.2 s before writing, because pyserial flushes the input buffer while it
  opens a port.
"""
from __future__ import annotations

import fcntl
import math
import os
import random
import select
import string
import struct
import termios
import threading
import time
import tty
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from cobs import cobs

from firmware_bridge.protocol import (
    MAX_SENSOR_NAME_LEN,
    PROTOCOL_VERSION,
    SEQ_MODULO,
    T_US_MODULO,
    Sample,
    encode_hello,
    encode_sample,
    format_csv_line,
)
from firmware_bridge.recording import Recording, read_recording

READER_SETTLE_S = 0.2  # wall seconds between a reader opening the pty and the first byte
HELLO_EVERY_S = 5.0  # stream seconds between HELLO frames (as the firmware does)
WRITE_CHUNK = 4096  # bytes held at most before a write, when the device runs behind its schedule


class SimulationError(ValueError):
    """A virtual-device setting is invalid, or the pty / link cannot be created."""


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise SimulationError(f"--{name} {value} is not a probability; give a share between 0 and 1 (e.g. 0.01)")
    return float(value)


def _check_seconds(name: str, value: float | None, positive: bool = False) -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise SimulationError(f"--{name} {value} must be {'positive' if positive else '>= 0'} stream seconds")


@dataclass(frozen=True)
class Faults:
    """What the virtual device does wrong; all times in stream seconds. The default is a perfect device."""

    drop: float = 0.0  # share of samples not sent
    corrupt: float = 0.0  # share of samples sent with one bit flipped (text: one character replaced)
    duplicate: float = 0.0  # share of samples sent twice
    garbage: float = 0.0  # share of samples preceded by a burst of random bytes
    stall_at: float | None = None  # the stream stops here ...
    stall_for: float = 0.0  # ... for this long (nothing lost: a board that hangs and recovers)
    disconnect_every: float | None = None  # unplugged after every this many seconds of connection ...
    disconnect_for: float = 1.0  # ... for this long (the device keeps sampling: those samples are lost)
    reboot_at: tuple[float, ...] = ()  # the device reboots with the port kept open: HELLO, seq and t_us from 0
    seed: int = 0  # of the fault RNG

    def __post_init__(self) -> None:
        for name in ("drop", "corrupt", "duplicate", "garbage"):
            _check_probability(name, getattr(self, name))
        _check_seconds("stall-at", self.stall_at)
        _check_seconds("stall-for", self.stall_for)
        _check_seconds("disconnect-every", self.disconnect_every, positive=True)
        _check_seconds("disconnect-for", self.disconnect_for)
        reboots = tuple(sorted(float(t) for t in self.reboot_at))
        for t in reboots:
            _check_seconds("reboot-at", t)
        object.__setattr__(self, "reboot_at", reboots)

    @classmethod
    def flaky_cable(cls, seed: int = 0) -> Faults:
        """Mild faults (the demo's --faults): what a flaky USB cable and a noisy line look like."""
        return cls(drop=0.003, corrupt=0.003, duplicate=0.002, garbage=0.002, seed=seed)

    def active(self) -> dict[str, Any]:
        """The settings that differ from a perfect device (for messages)."""
        default = Faults()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "seed" and getattr(self, f.name) != getattr(default, f.name)}


@dataclass
class InjectedCounts:
    samples_total: int = 0  # stream samples the device produced (sent or lost)
    samples_sent: int = 0  # samples delivered intact (first copy)
    hellos_sent: int = 0
    lines_sent: int = 0  # text mode: lines written (including duplicates and corrupted ones)
    dropped: int = 0
    corrupted: int = 0
    corrupted_bytes: int = 0  # wire bytes of corrupted frames (the receiver counts them as garbage)
    duplicated: int = 0
    garbage_bursts: int = 0
    garbage_bytes: int = 0  # not counting the 0x00 (frame mode) or newline (text mode) that ends a burst
    stalls: int = 0
    reboots: int = 0
    disconnects: int = 0
    lost_in_disconnect: int = 0
    connections: int = 0  # readers served (1 + reconnects + reader reopenings); counted by the pty end
    lost_indices: list[int] = field(default_factory=list)  # stream indices not delivered intact

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lost_indices"}


@dataclass(frozen=True)
class Chunk:
    """Bytes due on the wire at stream second `t`."""

    t: float
    data: bytes


@dataclass(frozen=True)
class Stall:
    """Nothing on the wire for `seconds` (stream seconds); nothing lost."""

    seconds: float


@dataclass(frozen=True)
class Unplug:
    """The port goes away for `seconds`; the samples of that span were lost (counted already)."""

    seconds: float


class FaultStream:
    """The device's output as a pure, seeded sequence of `Chunk` / `Stall` / `Unplug` steps.

    No I/O and no clock: iterating twice with the same settings gives the same bytes, and
    `injected` says what the receiver must count. `VirtualDevice` plays it on a pty."""

    def __init__(self, values: Sequence[tuple[float, ...]], faults: Faults = Faults(), *, rate_hz: float = 50.0,
                 text: bool = False, loop: bool = False, sensor: str = "virtual",
                 hello_every: float = HELLO_EVERY_S, samples: int | None = None) -> None:
        if not values:
            raise SimulationError("the recording has no samples; nothing to play")
        if not (math.isfinite(rate_hz) and 0 < rate_hz <= 0xFFFF):
            raise SimulationError(f"rate {rate_hz} Hz is not a usable sample rate")
        if not hello_every > 0:
            raise SimulationError(f"hello_every {hello_every} must be positive")
        if samples is not None and samples < 1:
            raise SimulationError(f"--samples {samples} must be a positive number of stream samples")
        self.values = list(values)
        self.limit = samples if samples is not None else (None if loop else len(self.values))
        self.faults = faults
        self.rate_hz = float(rate_hz)
        self.text, self.loop = text, loop
        self.sensor = sensor[:MAX_SENSOR_NAME_LEN]
        self.hello_every = hello_every
        self.injected = InjectedCounts()

    def connection_start(self) -> bytes:
        """What a (re)connected or rebooted device sends first: a 0x00 that ends any partial frame, a HELLO."""
        if self.text:
            return b""
        self.injected.hellos_sent += 1
        return b"\x00" + encode_hello(PROTOCOL_VERSION, round(self.rate_hz), self.sensor)

    def __iter__(self) -> Iterator[Chunk | Stall | Unplug]:
        f, inj = self.faults, self.injected
        rng = random.Random(f.seed)
        total, rate = len(self.values), self.rate_hz
        yield Chunk(0.0, self.connection_start())
        next_hello = self.hello_every
        stalled = False
        next_disconnect = f.disconnect_every
        reboots = list(f.reboot_at)
        boot = 0  # stream index of the last (re)boot: seq and device time count from there
        index = 0
        limit = self.limit
        while limit is None or index < limit:
            t = index / rate
            if f.stall_at is not None and not stalled and t >= f.stall_at:
                stalled = True
                inj.stalls += 1
                yield Stall(f.stall_for)
            if f.disconnect_every is not None and next_disconnect is not None and t >= next_disconnect:
                inj.disconnects += 1
                skipped = round(f.disconnect_for * rate)  # the device keeps sampling meanwhile
                if limit is not None:
                    skipped = min(skipped, limit - index)
                inj.lost_indices.extend(range(index, index + skipped))
                inj.samples_total += skipped
                inj.lost_in_disconnect += skipped
                index += skipped
                next_disconnect += f.disconnect_every + f.disconnect_for
                yield Unplug(f.disconnect_for)
                if limit is not None and index >= limit:
                    return
                yield Chunk(index / rate, self.connection_start())
                continue
            head = b""
            if reboots and t >= reboots[0]:
                reboots.pop(0)
                inj.reboots += 1
                boot = index
                next_hello = t + self.hello_every
                head = self.connection_start()
            elif t >= next_hello:
                head = self.connection_start()[1:]  # a periodic HELLO, without the boot 0x00
                next_hello += self.hello_every
            n = index - boot
            sample = Sample(n % SEQ_MODULO, round(n * 1e6 / rate) % T_US_MODULO, *self.values[index % total])
            yield Chunk(t, head + self._sample_bytes(index, sample, rng))
            index += 1

    def _sample_bytes(self, index: int, sample: Sample, rng: random.Random) -> bytes:
        """The wire bytes for stream sample `index`, with faults applied."""
        f, inj = self.faults, self.injected
        inj.samples_total += 1
        out = bytearray()
        if f.garbage and rng.random() < f.garbage:
            n = rng.randint(1, 16)
            if self.text:
                out += "".join(rng.choice(string.ascii_letters) for _ in range(n)).encode("ascii") + b"\n"
            else:
                out += bytes(rng.randint(1, 255) for _ in range(n)) + b"\x00"
            inj.garbage_bursts += 1
            inj.garbage_bytes += n
        if f.drop and rng.random() < f.drop:
            inj.dropped += 1
            inj.lost_indices.append(index)
            return bytes(out)
        frame = format_csv_line(sample) if self.text else encode_sample(sample)
        if f.corrupt and rng.random() < f.corrupt:
            if self.text:
                line = bytearray(frame)
                line[rng.randrange(len(line) - 1)] = ord("x")  # never the newline: exactly one bad line
                frame = bytes(line)
                inj.lines_sent += 1
            else:
                raw = bytearray(cobs.decode(frame[:-1]))  # type | payload | crc, as the encoder made it
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                frame = cobs.encode(bytes(raw)) + b"\x00"
                inj.corrupted_bytes += len(frame) - 1
            inj.corrupted += 1
            inj.lost_indices.append(index)
            return bytes(out + frame)
        inj.samples_sent += 1
        inj.lines_sent += self.text
        out += frame
        if f.duplicate and rng.random() < f.duplicate:
            out += frame
            inj.duplicated += 1
            inj.lines_sent += self.text
        return bytes(out)


class VirtualDevice:
    """A `FaultStream` on a pseudo-terminal, paced at `speed` times real time."""

    def __init__(self, recording: Recording | str | Path | list[Sample], faults: Faults = Faults(), *,
                 speed: float = 1.0, link: str | Path | None = None, text: bool = False, loop: bool = False,
                 sensor: str = "virtual", rate_hz: float | None = None, samples: int | None = None,
                 write_times: list[float] | None = None) -> None:
        """write_times: a list that gets the time.perf_counter() at which each `Chunk` of the stream was written
        to the pty, in stream order (chunks sent in one write share a time); for latency measurements."""
        if isinstance(recording, (str, Path)):
            recording = read_recording(recording)
        if isinstance(recording, Recording):
            values = [s.values() for s in recording.samples]
            rate_hz = rate_hz or recording.rate_hz
        else:
            values = [s.values() for s in recording]
        if not (math.isfinite(speed) and speed > 0):
            raise SimulationError(f"--speed {speed} must be positive (1 = real time, 10 = ten times faster)")
        self.stream = FaultStream(values, faults, rate_hz=float(rate_hz or 50.0), text=text, loop=loop, sensor=sensor,
                                  samples=samples)
        self.speed = float(speed)
        self.link = Path(link) if link is not None else None
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = -1
        self._pty_path: str | None = None
        self._lock = threading.Lock()
        self.write_times = write_times
        self._chunks_pending = 0  # Chunks in the bytes not yet written

    # ---- public API ----
    @property
    def injected(self) -> InjectedCounts:
        return self.stream.injected

    @property
    def rate_hz(self) -> float:
        return self.stream.rate_hz

    @property
    def pty_path(self) -> str | None:
        """The current pseudo-terminal (changes after a disconnect); None while disconnected."""
        return self._pty_path

    @property
    def port(self) -> str | None:
        """What a reader should open: the stable link if there is one, else the pty."""
        return str(self.link) if self.link is not None else self._pty_path

    @property
    def n_samples(self) -> int:
        """Samples in one pass of the recording."""
        return len(self.stream.values)

    @property
    def finished(self) -> bool:
        return self._thread is not None and not self._thread.is_alive()

    def start(self) -> str:
        """Creates the pty (and link) and starts streaming in a thread; returns the pty path."""
        if self._thread is not None:
            raise SimulationError("this virtual device was already started; create a new one")
        self._open_pty()
        self._thread = threading.Thread(target=self._run, name="VirtualDevice", daemon=True)
        self._thread.start()
        assert self._pty_path is not None  # _open_pty set it
        return self._pty_path

    def wait(self, timeout: float | None = None) -> bool:
        """Waits for the recording to end; True if it ended. Re-raises an error of the device thread."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return not self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        self._close_pty()

    def __enter__(self) -> VirtualDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- pty and link ----
    def _open_pty(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing, no CR/LF translation: bytes pass as they are
        path = os.ttyname(slave)
        # Closing our slave end lets poll() on the master report POLLHUP until a reader opens it.
        os.close(slave)
        os.set_blocking(master, False)
        with self._lock:
            self._master, self._pty_path = master, path
        if self.link is not None:
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}.tmp")
            try:
                self.link.parent.mkdir(parents=True, exist_ok=True)
                if tmp.is_symlink() or tmp.exists():
                    tmp.unlink()
                os.symlink(path, tmp)
                os.replace(tmp, self.link)  # atomic: a reader never sees a half-made link
            except OSError as exc:
                self._close_pty()
                raise SimulationError(f"cannot create the link {self.link} -> {path}: {exc.strerror}; "
                                      "pick a writable path for --link") from None

    def _close_pty(self) -> None:
        with self._lock:
            master, self._master, self._pty_path = self._master, -1, None
        if master >= 0:
            os.close(master)
        if self.link is not None and self.link.is_symlink():
            try:
                self.link.unlink()
            except FileNotFoundError:
                pass

    def _reader_present(self, timeout: float = 0.0) -> bool:
        poller = select.poll()
        poller.register(self._master, select.POLLOUT)
        events = poller.poll(timeout * 1000)
        return bool(events) and not events[0][1] & select.POLLHUP

    def _wait_for_reader(self) -> float:
        """Blocks until a reader opens the pty; returns the seconds waited (the clock stands still)."""
        begin = time.monotonic()
        while not self._stop.is_set():
            if self._reader_present(0.05):
                # pyserial (like many hosts) flushes the input buffer right after opening the
                # port: bytes written in that instant would vanish, so let the open finish.
                self._stop.wait(READER_SETTLE_S)
                return time.monotonic() - begin
            time.sleep(0.05)  # POLLHUP returns at once: do not spin
        return time.monotonic() - begin

    def _write(self, data: bytes | bytearray) -> float:
        """Writes everything, waiting while the reader is slow or gone; returns the seconds spent
        waiting for a new reader (the caller moves its clock by that much)."""
        waited = 0.0
        view = memoryview(data)
        poller = select.poll()
        poller.register(self._master, select.POLLOUT)
        while view and not self._stop.is_set():
            events = poller.poll(100)
            if not events:
                continue  # pty buffer full: the reader is slow
            if events[0][1] & select.POLLHUP:
                # The reader closed the port. What it did not read would reach the next reader
                # stale, so it is flushed, and the stream waits (nothing of the rest is lost).
                try:
                    termios.tcflush(self._master, termios.TCIOFLUSH)
                except termios.error:
                    pass
                waited += self._reader_arrived()
                continue
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                continue
            view = view[written:]
        if self.write_times is not None and not view:
            self.write_times.extend([time.perf_counter()] * self._chunks_pending)
        self._chunks_pending = 0
        return waited

    def _unread_bytes(self) -> int:
        """Bytes written to the pty that its reader has not read yet (0 when no reader)."""
        path = self._pty_path
        if path is None or not self._reader_present(0.0):
            return 0
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        except OSError:
            return 0
        try:
            waiting: int = struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
            return waiting
        except OSError:
            return 0
        finally:
            os.close(fd)

    # ---- playing the stream ----
    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _run(self) -> None:
        try:
            self._play()
        except BaseException as exc:  # reported by wait(): a crashed device must not look like a finished one
            self.error = exc

    def _reader_arrived(self) -> float:
        """Waits for a reader; returns the wall seconds waited (the stream clock stands still)."""
        waited = self._wait_for_reader()
        self.injected.connections += 1
        return waited

    def _play(self) -> None:
        origin = time.monotonic() + self._reader_arrived()
        pending = bytearray()
        unplugged = False
        for step in self.stream:
            if self._stop.is_set():
                return
            if isinstance(step, Chunk):
                if unplugged:  # plugged in again: a new pty (the link moves to it)
                    unplugged = False
                    self._open_pty()
                    origin += self._reader_arrived()
                delay = origin + step.t / self.speed - time.monotonic()
                if delay > 0:
                    if pending:
                        origin += self._write(pending)
                        pending.clear()
                        delay = origin + step.t / self.speed - time.monotonic()
                    self._sleep(delay)
                pending += step.data
                self._chunks_pending += 1
                # On schedule: the bytes go out at their time. Behind it (a fast speed), they gather up to
                # WRITE_CHUNK bytes: one write per frame would slow the device further.
                if delay > 0 or len(pending) >= WRITE_CHUNK:
                    origin += self._write(pending)
                    pending.clear()
                continue
            origin += self._write(pending)
            pending.clear()
            if isinstance(step, Stall):
                self._sleep(step.seconds / self.speed)
                origin += step.seconds / self.speed
            else:  # Unplug
                self._drain()  # so the reader's counts match what was injected
                self._close_pty()
                self._sleep(step.seconds / self.speed)
                unplugged = True
        if pending and not self._stop.is_set() and not unplugged:
            self._write(pending)
        if not unplugged:
            self._drain()

    def _drain(self, timeout: float = 5.0) -> None:
        """Waits until the reader has read what was written: closing the pty would throw it away.
        The kernel moves written bytes to the reader's queue asynchronously, so one empty
        reading proves nothing; the queue must stay empty for 0.1 s."""
        deadline = time.monotonic() + timeout
        empty_since = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self._unread_bytes() > 0:
                empty_since = time.monotonic()
            elif time.monotonic() - empty_since >= 0.1:
                return
            time.sleep(0.01)
