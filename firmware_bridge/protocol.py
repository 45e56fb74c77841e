"""The wire protocol between the IMU firmware and the host (spec: PROTOCOL.md).

Every frame is ``COBS(type | payload | crc16) 0x00``; the CRC is CRC-16/CCITT-FALSE
(``binascii.crc_hqx(data, 0xFFFF)``) over type and payload, stored little-endian.

This module is pure: no I/O, standard library plus the ``cobs`` package. The decoders
accept any byte sequence without raising and count what they had to throw away.
"""
from __future__ import annotations

import binascii
import math
import struct
from dataclasses import dataclass, fields
from typing import Any

from cobs import cobs

PROTOCOL_VERSION = 1
DEFAULT_BAUD = 115200
DEFAULT_RATE_HZ = 50

TYPE_SAMPLE = 0x01
TYPE_HELLO = 0x02
TYPE_LOG = 0x03

SAMPLE_STRUCT = struct.Struct("<HIffffff")  # seq, t_us, ax, ay, az, gx, gy, gz: 30 bytes
HELLO_HEAD_STRUCT = struct.Struct("<BH")  # version, rate_hz; the sensor name follows
CRC_STRUCT = struct.Struct("<H")
SAMPLE_PAYLOAD_LEN = SAMPLE_STRUCT.size
MAX_SENSOR_NAME_LEN = 24
MAX_LOG_LEN = 64
# Largest decoded frame is a LOG: type + 64 text bytes + crc = 67 bytes. COBS adds one code
# byte per 254 bytes (plus one), so no valid frame is longer than 68 bytes on the wire.
MAX_DECODED_FRAME_LEN = 1 + MAX_LOG_LEN + 2
MAX_ENCODED_FRAME_LEN = MAX_DECODED_FRAME_LEN + 1

SEQ_MODULO = 1 << 16
T_US_MODULO = 1 << 32


class ProtocolError(ValueError):
    """A value cannot be put on the wire (e.g. a sensor name that is too long)."""


@dataclass(frozen=True)
class Sample:
    """One IMU reading: acceleration in g (gravity included), angular rate in rad/s."""

    seq: int
    t_us: int
    ax: float
    ay: float
    az: float
    gx: float
    gy: float
    gz: float

    def values(self) -> tuple[float, float, float, float, float, float]:
        return (self.ax, self.ay, self.az, self.gx, self.gy, self.gz)


@dataclass(frozen=True)
class Hello:
    version: int
    rate_hz: int
    sensor: str


@dataclass(frozen=True)
class Log:
    text: str


Frame = Sample | Hello | Log


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final xor."""
    return binascii.crc_hqx(data, 0xFFFF)


def _frame(frame_type: int, payload: bytes) -> bytes:
    body = bytes([frame_type]) + payload
    encoded: bytes = cobs.encode(body + CRC_STRUCT.pack(crc16(body)))  # cobs ships no types
    return encoded + b"\x00"


def _ascii(text: str, limit: int, what: str) -> bytes:
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        raise ProtocolError(f"{what} {text!r} is not ASCII; use ASCII characters only") from None
    if len(data) > limit:
        raise ProtocolError(f"{what} {text!r} is {len(data)} bytes; the protocol allows at most {limit}")
    return data


def sample_payload(sample: Sample) -> bytes:
    """The 30-byte SAMPLE payload; seq and t_us are taken modulo 2**16 and 2**32 (they wrap)."""
    return SAMPLE_STRUCT.pack(
        sample.seq % SEQ_MODULO, sample.t_us % T_US_MODULO,
        sample.ax, sample.ay, sample.az, sample.gx, sample.gy, sample.gz,
    )


def encode_sample(sample: Sample) -> bytes:
    return _frame(TYPE_SAMPLE, sample_payload(sample))


def encode_hello(version: int = PROTOCOL_VERSION, rate_hz: int = DEFAULT_RATE_HZ, sensor: str = "") -> bytes:
    if not 0 <= version <= 0xFF:
        raise ProtocolError(f"HELLO version {version} does not fit in a u8 (0..255)")
    if not 0 <= rate_hz <= 0xFFFF:
        raise ProtocolError(f"HELLO rate_hz {rate_hz} does not fit in a u16 (0..65535)")
    return _frame(TYPE_HELLO, HELLO_HEAD_STRUCT.pack(version, rate_hz) + _ascii(sensor, MAX_SENSOR_NAME_LEN, "sensor name"))


def encode_log(text: str) -> bytes:
    return _frame(TYPE_LOG, _ascii(text, MAX_LOG_LEN, "LOG text"))


def encode_raw_frame(frame_type: int, payload: bytes) -> bytes:
    """Any type and payload, framed (for tests of unknown types and bad lengths)."""
    return _frame(frame_type, payload)


@dataclass
class DecoderCounters:
    frames: int = 0  # frames with a valid CRC, of any type
    samples: int = 0
    hellos: int = 0
    logs: int = 0
    crc_errors: int = 0  # well-formed COBS whose CRC does not match
    malformed: int = 0  # chunks that are not valid COBS, too short, too long, or of a wrong length for their type
    garbage_bytes: int = 0  # bytes (delimiters excluded) of every chunk thrown away
    unknown_types: int = 0  # valid frames of a type this host does not know (ignored)
    seq_gaps: int = 0  # places where seq jumped forward by more than one
    lost_samples: int = 0  # sum of the gap sizes (samples missing in between)
    duplicates: int = 0  # samples repeating the previous seq (dropped, not returned)
    seq_resets: int = 0  # seq went backwards, or device time did (device reboot or reordering): tracking restarts

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def clock_agrees(step: int, elapsed_us: int, period_us: float) -> bool:
    """Whether a seq jump of `step` samples and `elapsed_us` of device time (both wrap-aware, forward)
    tell the same story for a device sampling every `period_us`: a gap does, a reboot (seq and clock
    restarted, which can land "forward" of the last values in both) does not."""
    expected_us = step * period_us
    return abs(elapsed_us - expected_us) <= 0.1 * expected_us + 1e6


class _SeqTracker:
    """Wrap-around aware sequence accounting of the frame decoder."""

    def __init__(self, counters: DecoderCounters) -> None:
        self.counters = counters
        self.last: int | None = None
        self.last_t = 0
        self.period_us = 1e6 / DEFAULT_RATE_HZ  # device time per sample, as last measured

    def accept(self, seq: int, t_us: int) -> bool:
        """Counts gaps/duplicates; returns False for a duplicate that should be dropped."""
        if self.last is not None:
            step = (seq - self.last) % SEQ_MODULO
            elapsed = (t_us - self.last_t) % T_US_MODULO
            back_in_time = elapsed >= T_US_MODULO // 2
            if step == 0 and t_us == self.last_t:
                self.counters.duplicates += 1
                return False
            if step == 1 and 0 < elapsed < 1_000_000:
                self.period_us = elapsed
            if step == 0 or step >= SEQ_MODULO // 2 or back_in_time or \
                    (step > 1 and not clock_agrees(step, elapsed, self.period_us)):
                # Backwards in seq or in device time, or a jump the clock does not match: a reboot
                # (at any seq), not a gap of 30000+.
                self.counters.seq_resets += 1
            elif step > 1:
                self.counters.seq_gaps += 1
                self.counters.lost_samples += step - 1
        self.last, self.last_t = seq, t_us
        return True


class Packetizer:
    """The buffering both decoders share, as pyserial's ``serial.threaded.Packetizer`` is shared by
    its ``LineReader``: bytes are split at ``TERMINATOR`` and each packet (terminator excluded) goes
    to ``handle_packet``. A packet growing past ``MAX_PACKET_LEN`` is thrown away up to the next
    terminator (counted by ``handle_overflow`` and in ``counters.garbage_bytes``), so memory stays
    bounded whatever arrives. Pure: no I/O, never raises."""

    TERMINATOR = b"\x00"
    MAX_PACKET_LEN = 0

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._overflow = False  # the current packet is too long: skip to the next terminator
        self.counters: DecoderCounters | CsvCounters

    @property
    def pending_bytes(self) -> int:
        """Bytes held for a packet whose terminator has not arrived yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Any]:
        out: list[Any] = []
        if not data:
            return out
        start = 0
        view = bytes(data)
        while True:
            end = view.find(self.TERMINATOR, start)
            if end < 0:
                self._append(view[start:])
                return out
            self._append(view[start:end])
            packet = bytes(self._buffer)
            self._buffer.clear()
            overflowed, self._overflow = self._overflow, False
            item = self.handle_packet(packet, overflowed)
            if item is not None:
                out.append(item)
            start = end + 1

    def _append(self, part: bytes) -> None:
        if self._overflow:
            self.counters.garbage_bytes += len(part)
            return
        self._buffer += part
        if len(self._buffer) > self.MAX_PACKET_LEN:
            self.counters.garbage_bytes += len(self._buffer)
            self.handle_overflow()
            self._buffer.clear()
            self._overflow = True

    def handle_packet(self, packet: bytes, overflowed: bool) -> object:
        """One packet ended by a terminator (``overflowed``: it was too long and is already thrown
        away) -> the decoded item, or None."""
        raise NotImplementedError

    def handle_overflow(self) -> None:
        """Count a packet that grew too long (its bytes are already in ``garbage_bytes``)."""
        raise NotImplementedError


class FrameDecoder(Packetizer):
    counters: DecoderCounters
    """Incremental, pure decoder of the framed protocol: ``feed(bytes) -> [Sample|Hello|Log]``.

    Never raises on any input. Bytes between delimiters that do not form a valid frame are
    thrown away and counted; decoding resumes at the next 0x00. The first chunk after start
    (or after an over-long chunk) may be the tail of a frame the reader joined late, so its
    failure counts as garbage only, not as a CRC error.
    """

    TERMINATOR = b"\x00"
    MAX_PACKET_LEN = MAX_ENCODED_FRAME_LEN

    def __init__(self) -> None:
        super().__init__()
        self.counters = DecoderCounters()
        self._synced = False  # seen a delimiter yet
        self._seq = _SeqTracker(self.counters)

    def reset_sequence(self) -> None:
        """Forget the last seq (after a reconnect, so the gap is not counted as loss)."""
        self._seq.last = None

    def handle_overflow(self) -> None:
        if self._synced:
            self.counters.malformed += 1

    def handle_packet(self, packet: bytes, overflowed: bool) -> Frame | None:
        was_synced = self._synced and not overflowed
        self._synced = True
        if overflowed or not packet:
            return None  # an empty chunk (0x00 0x00) is a harmless resync marker
        return self._decode_chunk(packet, was_synced)

    def _reject(self, chunk: bytes, was_synced: bool, crc: bool = False) -> None:
        self.counters.garbage_bytes += len(chunk)
        if was_synced:
            if crc:
                self.counters.crc_errors += 1
            else:
                self.counters.malformed += 1

    def _decode_chunk(self, chunk: bytes, was_synced: bool) -> Frame | None:
        try:
            raw = cobs.decode(chunk)
        except cobs.DecodeError:
            self._reject(chunk, was_synced)
            return None
        if len(raw) < 3:
            self._reject(chunk, was_synced)
            return None
        body, (crc,) = raw[:-2], CRC_STRUCT.unpack(raw[-2:])
        if crc16(body) != crc:
            self._reject(chunk, was_synced, crc=True)
            return None
        frame_type, payload = body[0], body[1:]
        if frame_type == TYPE_SAMPLE:
            if len(payload) != SAMPLE_PAYLOAD_LEN:
                self._reject(chunk, was_synced)
                return None
            self.counters.frames += 1
            sample = Sample(*SAMPLE_STRUCT.unpack(payload))
            if not self._seq.accept(sample.seq, sample.t_us):
                return None
            self.counters.samples += 1
            return sample
        if frame_type == TYPE_HELLO:
            if not HELLO_HEAD_STRUCT.size <= len(payload) <= HELLO_HEAD_STRUCT.size + MAX_SENSOR_NAME_LEN:
                self._reject(chunk, was_synced)
                return None
            self.counters.frames += 1
            self.counters.hellos += 1
            version, rate_hz = HELLO_HEAD_STRUCT.unpack(payload[: HELLO_HEAD_STRUCT.size])
            return Hello(version, rate_hz, payload[HELLO_HEAD_STRUCT.size:].decode("ascii", "replace"))
        if frame_type == TYPE_LOG:
            if len(payload) > MAX_LOG_LEN:
                self._reject(chunk, was_synced)
                return None
            self.counters.frames += 1
            self.counters.logs += 1
            return Log(payload.decode("ascii", "replace"))
        self.counters.frames += 1
        self.counters.unknown_types += 1
        return None


@dataclass
class CsvCounters:
    lines: int = 0
    samples: int = 0
    bad_lines: int = 0  # lines that are not 6 or 7 numbers (headers and comments count too)
    garbage_bytes: int = 0  # bytes of bad lines

    def as_dict(self) -> dict[str, int]:
        return {"lines": self.lines, "samples": self.samples, "bad_lines": self.bad_lines,
                "garbage_bytes": self.garbage_bytes}


class CsvLineDecoder(Packetizer):
    counters: CsvCounters
    """Plain-text mode: one line per sample, ``ax,ay,az,gx,gy,gz`` (g, rad/s), optionally
    preceded by a millisecond timestamp (7 fields). Lines end in LF or CRLF.

    seq is assigned here (0, 1, ... wrapping at 2**16). t_us is the timestamp * 1000 when one
    is given, else seq-count / rate_hz. Never raises; bad lines are counted and skipped.
    """

    TERMINATOR = b"\n"
    MAX_PACKET_LEN = MAX_LINE_LEN = 256

    def __init__(self, rate_hz: float = DEFAULT_RATE_HZ) -> None:
        super().__init__()
        self.rate_hz = rate_hz
        self.counters = CsvCounters()
        self._count = 0

    def handle_overflow(self) -> None:
        self.counters.lines += 1
        self.counters.bad_lines += 1

    def handle_packet(self, packet: bytes, overflowed: bool) -> Sample | None:
        return None if overflowed else self._parse(packet)

    def _bad(self, line: bytes) -> None:
        self.counters.bad_lines += 1
        self.counters.garbage_bytes += len(line)

    def _parse(self, line: bytes) -> Sample | None:
        text = line.strip(b"\r \t")
        if not text:
            return None  # blank lines are not samples and not errors
        self.counters.lines += 1
        parts = text.split(b",")
        if len(parts) not in (6, 7):
            self._bad(line)
            return None
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            self._bad(line)
            return None
        if any(math.isinf(v) for v in numbers):
            self._bad(line)
            return None
        n = self._count
        if len(numbers) == 7:
            t_ms = numbers.pop(0)
            if math.isnan(t_ms) or t_ms < 0:
                self._bad(line)
                return None
            t_us = int(round(t_ms * 1000)) % T_US_MODULO
        else:
            t_us = int(round(n * 1e6 / self.rate_hz)) % T_US_MODULO
        self._count += 1
        self.counters.samples += 1
        return Sample(n % SEQ_MODULO, t_us, *numbers)


def format_csv_line(sample: Sample, with_timestamp: bool = True) -> bytes:
    """The plain-text line for a sample (what the virtual device sends in text mode)."""
    values = ",".join(f"{v:.6g}" for v in sample.values())
    if with_timestamp:
        return f"{sample.t_us // 1000},{values}\n".encode("ascii")
    return f"{values}\n".encode("ascii")
