"""A virtual IMU device on a pseudo-terminal: plays a recording as protocol frames (or text lines).

    with VirtualDevice("acc_exp01_user01.txt", speed=20, drop=0.01, seed=1) as dev:
        port = dev.port          # /dev/pts/N, or the stable link if one was asked for
        ...                      # open it with pyserial like a real device
        dev.wait()
        print(dev.injected)      # what was dropped / corrupted / duplicated / injected

Behaviour (also in PROTOCOL.md, "Virtual device"):
- The device is a fresh device: seq counts from 0 and t_us from 0 at 20 ms per sample
  (1 / rate_hz); the values come from the recording (looped with ``loop=True``).
- It never writes while no reader has the pty open: it waits for a reader before the first
  byte and whenever the reader goes away, and its stream clock stands still meanwhile. So
  nothing is lost before the reader opens the port. After a reader appears it waits 0.2 s
  before writing, because pyserial flushes the input buffer while it opens a port.
- Frame mode starts every connection with a 0x00 and a HELLO, then a HELLO every 5 s of
  stream time. HELLO frames are never faulted. Text mode sends ``t_ms,ax,ay,az,gx,gy,gz``
  lines and no HELLO.
- All times (pause_at, pause_for, disconnect_every, disconnect_for, hello_every) are stream
  seconds; at ``speed`` N they last 1/N as long on the wall clock.
- Faults, decided per sample with a seeded RNG, in this order: drop (not sent), corrupt (one
  bit flipped before COBS, so the receiver sees exactly one CRC error; in text mode one
  character replaced, so one bad line), duplicate (an intact frame sent twice), garbage (a
  burst of 1-16 random non-zero bytes and a 0x00 before the frame; letters and a newline in
  text mode). A pause stops the stream (nothing lost). A disconnect closes the pty and
  removes the link (after the reader has read what was already sent); the device keeps
  running, so samples of the disconnected span are lost (seq jumps over them); then a new
  pty appears and the link points to it.
"""
from __future__ import annotations

import fcntl
import os
import random
import select
import string
import struct
import termios
import threading
import time
import tty
from dataclasses import dataclass, field, fields
from pathlib import Path

from cobs import cobs

from firmware_bridge.protocol import (
    CRC_STRUCT,
    PROTOCOL_VERSION,
    SEQ_MODULO,
    T_US_MODULO,
    TYPE_SAMPLE,
    Sample,
    crc16,
    encode_hello,
    format_csv_line,
    sample_payload,
)
from firmware_bridge.recording import Recording, read_recording


READER_SETTLE_S = 0.2  # wall seconds between a reader opening the pty and the first byte


class SimulationError(ValueError):
    """A virtual-device setting is invalid, or the pty / link cannot be created."""


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
    pauses: int = 0
    disconnects: int = 0
    lost_in_disconnect: int = 0
    connections: int = 0  # readers served (1 + reconnects + reader reopenings)
    lost_indices: list[int] = field(default_factory=list)  # stream indices not delivered intact

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "lost_indices"}


def _check_probability(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise SimulationError(f"--{name} {value} is not a probability; give a share between 0 and 1 (e.g. 0.01)")
    return float(value)


class VirtualDevice:
    def __init__(
        self,
        recording: Recording | str | Path | list[Sample],
        *,
        speed: float = 1.0,
        link: str | Path | None = None,
        text: bool = False,
        loop: bool = False,
        drop: float = 0.0,
        corrupt: float = 0.0,
        duplicate: float = 0.0,
        garbage: float = 0.0,
        pause_at: float | None = None,
        pause_for: float = 0.0,
        disconnect_every: float | None = None,
        disconnect_for: float = 0.0,
        seed: int = 0,
        hello_every: float = 5.0,
        sensor: str = "virtual",
        rate_hz: float | None = None,
    ) -> None:
        if isinstance(recording, (str, Path)):
            recording = read_recording(recording)
        if isinstance(recording, Recording):
            values = [s.values() for s in recording.samples]
            rate_hz = rate_hz or recording.rate_hz
        else:
            values = [s.values() for s in recording]
        if not values:
            raise SimulationError("the recording has no samples; nothing to play")
        if not speed > 0:
            raise SimulationError(f"--speed {speed} must be positive (1 = real time, 10 = ten times faster)")
        self.rate_hz = float(rate_hz or 50.0)
        if not 0 < self.rate_hz <= 65535:
            raise SimulationError(f"rate {self.rate_hz} Hz is not a usable sample rate")
        for name, value in (("pause-for", pause_for), ("disconnect-for", disconnect_for)):
            if value < 0:
                raise SimulationError(f"--{name} {value} is negative; give seconds >= 0")
        if pause_at is not None and pause_at < 0:
            raise SimulationError(f"--pause-at {pause_at} is negative; give stream seconds >= 0")
        if disconnect_every is not None and disconnect_every <= 0:
            raise SimulationError(f"--disconnect-every {disconnect_every} must be positive stream seconds")
        if not hello_every > 0:
            raise SimulationError(f"hello_every {hello_every} must be positive")
        self._values = values
        self.speed = float(speed)
        self.link = Path(link) if link is not None else None
        self.text = text
        self.loop = loop
        self.drop = _check_probability("drop", drop)
        self.corrupt = _check_probability("corrupt", corrupt)
        self.duplicate = _check_probability("duplicate", duplicate)
        self.garbage = _check_probability("garbage", garbage)
        self.pause_at = pause_at
        self.pause_for = pause_for
        self.disconnect_every = disconnect_every
        self.disconnect_for = disconnect_for
        self.hello_every = hello_every
        self.sensor = sensor
        self.seed = seed
        self.injected = InjectedCounts()
        self.error: BaseException | None = None
        self._rng = random.Random(seed)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._master = -1
        self._pty_path: str | None = None
        self._lock = threading.Lock()
        self._connected = threading.Event()

    # ---- public API ----
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
        return len(self._values)

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
        return self._pty_path

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Blocks until a reader has the port open and the device is streaming."""
        return self._connected.wait(timeout)

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

    def __enter__(self) -> "VirtualDevice":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
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

    def _write(self, data: bytes) -> float:
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
                self._connected.clear()
                waited += self._wait_for_reader()
                self.injected.connections += 1
                self._connected.set()
                continue
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                continue
            view = view[written:]
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
            return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]
        except OSError:
            return 0
        finally:
            os.close(fd)

    # ---- the stream ----
    def _sample_bytes(self, index: int) -> bytes:
        """The wire bytes for stream sample ``index``, with faults applied."""
        inj, rng = self.injected, self._rng
        values = self._values[index % len(self._values)]
        sample = Sample(index % SEQ_MODULO, round(index * 1e6 / self.rate_hz) % T_US_MODULO, *values)
        inj.samples_total += 1
        out = bytearray()
        if self.garbage and rng.random() < self.garbage:
            n = rng.randint(1, 16)
            if self.text:
                out += "".join(rng.choice(string.ascii_letters) for _ in range(n)).encode("ascii") + b"\n"
            else:
                out += bytes(rng.randint(1, 255) for _ in range(n)) + b"\x00"
            inj.garbage_bursts += 1
            inj.garbage_bytes += n
        if self.drop and rng.random() < self.drop:
            inj.dropped += 1
            inj.lost_indices.append(index)
            return bytes(out)
        if self.corrupt and rng.random() < self.corrupt:
            if self.text:
                line = bytearray(format_csv_line(sample))
                line[rng.randrange(len(line) - 1)] = ord("x")  # never the newline: exactly one bad line
                frame = bytes(line)
                inj.lines_sent += 1
            else:
                body = bytes([TYPE_SAMPLE]) + sample_payload(sample)
                raw = bytearray(body + CRC_STRUCT.pack(crc16(body)))
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
                frame = cobs.encode(bytes(raw)) + b"\x00"
                inj.corrupted_bytes += len(frame) - 1
            inj.corrupted += 1
            inj.lost_indices.append(index)
            return bytes(out + frame)
        if self.text:
            frame = format_csv_line(sample)
            inj.lines_sent += 1
        else:
            body = bytes([TYPE_SAMPLE]) + sample_payload(sample)
            frame = cobs.encode(body + CRC_STRUCT.pack(crc16(body))) + b"\x00"
        inj.samples_sent += 1
        out += frame
        if self.duplicate and rng.random() < self.duplicate:
            out += frame
            inj.duplicated += 1
            inj.lines_sent += self.text
        return bytes(out)

    def _hello(self) -> bytes:
        if self.text:
            return b""
        self.injected.hellos_sent += 1
        return encode_hello(PROTOCOL_VERSION, min(round(self.rate_hz), 0xFFFF), self.sensor[:24])

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def _run(self) -> None:
        try:
            self._stream()
        except BaseException as exc:  # reported by wait(): a crashed device must not look like a finished one
            self.error = exc
        finally:
            self._connected.set()  # nobody waits forever on a device that ended

    def _stream(self) -> None:
        inj = self.injected
        total = len(self._values)
        origin = time.monotonic() + self._wait_for_reader()
        inj.connections += 1
        self._connected.set()
        pending = bytearray(b"" if self.text else b"\x00") + self._hello()
        next_hello = self.hello_every
        paused = False
        next_disconnect = self.disconnect_every
        index = 0
        while not self._stop.is_set() and (self.loop or index < total):
            stream_t = index / self.rate_hz
            if self.pause_at is not None and not paused and stream_t >= self.pause_at:
                paused = True
                origin += self._write(pending)
                pending.clear()
                self._sleep(self.pause_for / self.speed)
                origin += self.pause_for / self.speed
                inj.pauses += 1
            if next_disconnect is not None and stream_t >= next_disconnect:
                origin += self._write(pending)
                pending.clear()
                self._drain()  # so the reader's counts match what was injected
                self._connected.clear()
                self._close_pty()
                inj.disconnects += 1
                skipped = round(self.disconnect_for * self.rate_hz)  # the device keeps sampling meanwhile
                if not self.loop:
                    skipped = min(skipped, total - index)
                for lost in range(index, index + skipped):
                    inj.lost_indices.append(lost)
                inj.samples_total += skipped
                inj.lost_in_disconnect += skipped
                index += skipped
                self._sleep(self.disconnect_for / self.speed)
                next_disconnect += self.disconnect_every + self.disconnect_for
                if self._stop.is_set() or (not self.loop and index >= total):
                    break
                self._open_pty()
                origin += self._wait_for_reader()
                inj.connections += 1
                self._connected.set()
                pending += (b"" if self.text else b"\x00") + self._hello()
                continue
            due = origin + stream_t / self.speed
            delay = due - time.monotonic()
            if delay > 0:
                if pending:
                    origin += self._write(pending)
                    pending.clear()
                    delay = origin + stream_t / self.speed - time.monotonic()
                self._sleep(delay)
            if stream_t >= next_hello:
                pending += self._hello()
                next_hello += self.hello_every
            pending += self._sample_bytes(index)
            index += 1
        if pending and not self._stop.is_set():
            self._write(pending)
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
