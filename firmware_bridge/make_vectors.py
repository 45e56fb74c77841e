"""Writes firmware_bridge/test_vectors.json, the test vectors both the Python and the C tests read.

    python -m firmware_bridge.make_vectors            # rewrite the file
    python -m firmware_bridge.make_vectors --check    # exit 1 if the file is out of date

Values are chosen to hit the edge cases of the wire format: seq and t_us wrap-around,
zero bytes inside the payload (COBS must stuff them), -0.0, the longest HELLO and LOG, an
unknown type, and corrupted frames with the error a host must report for them.
"""
from __future__ import annotations

import argparse
import json
import struct
import sys
from pathlib import Path
from typing import Any

from cobs import cobs

from firmware_bridge import protocol as p

VECTORS_PATH = Path(__file__).with_name("test_vectors.json")


def f32(x: float) -> float:
    """The value a float has after a trip through binary32 (what the decoder returns)."""
    value: float = struct.unpack("<f", struct.pack("<f", x))[0]
    return value


def _sample_vector(name: str, description: str, seq: int, t_us: int, values: tuple[Any, ...]) -> dict[str, Any]:
    sample = p.Sample(seq, t_us, *(f32(v) for v in values))
    return {
        "name": name, "description": description, "expect": "sample",
        "hex": p.encode_sample(sample).hex(),
        "fields": {"seq": seq, "t_us": t_us, **{k: getattr(sample, k) for k in ("ax", "ay", "az", "gx", "gy", "gz")}},
    }


def _corrupt(name: str, description: str, raw_body: bytes, expect: str) -> dict[str, Any]:
    return {"name": name, "description": description, "expect": expect, "hex": (cobs.encode(raw_body) + b"\x00").hex()}


def build_vectors() -> dict[str, Any]:
    frames = [
        _sample_vector("sample_basic", "device at rest, z axis up", 1, 20000, (0.0, 0.0, 1.0, 0.01, -0.02, 0.5)),
        _sample_vector("sample_all_zero", "seq 0, t_us 0, all values 0.0: 29 zero bytes in the payload", 0, 0, (0.0,) * 6),
        _sample_vector("sample_seq_max", "seq and t_us at their maximum, the frame before the wrap", 65535, 4294967295,
                       (-0.25, 0.125, 0.96875, -1.5, 2.0, -3.25)),
        _sample_vector("sample_after_wrap", "seq wrapped to 0, t_us wrapped past 2^32 by one 20 ms step", 0, 19999,
                       (-0.25, 0.125, 0.96875, -1.5, 2.0, -3.25)),
        _sample_vector("sample_extremes", "full-scale values and negative zero", 4660, 123456789,
                       (-16.0, 15.9995, -0.0, 34.906586, -34.906586, 1e-6)),
        {"name": "hello_mpu6050", "description": "boot banner of the reference board", "expect": "hello",
         "hex": p.encode_hello(1, 50, "MPU-6050").hex(), "fields": {"version": 1, "rate_hz": 50, "sensor": "MPU-6050"}},
        {"name": "hello_synthetic_24", "description": "longest sensor name (24 bytes)", "expect": "hello",
         "hex": p.encode_hello(1, 50, "synthetic-walk-generator").hex(),
         "fields": {"version": 1, "rate_hz": 50, "sensor": "synthetic-walk-generator"}},
        {"name": "hello_empty_name", "description": "no sensor name, rate 256 Hz (a zero byte in rate_hz)", "expect": "hello",
         "hex": p.encode_hello(1, 256, "").hex(), "fields": {"version": 1, "rate_hz": 256, "sensor": ""}},
        {"name": "log_text", "description": "a diagnostic line", "expect": "log",
         "hex": p.encode_log("MPU-6050 not found at I2C 0x68").hex(), "fields": {"text": "MPU-6050 not found at I2C 0x68"}},
        {"name": "log_64", "description": "longest LOG (64 bytes)", "expect": "log",
         "hex": p.encode_log("L" * 32 + "0123456789abcdef0123456789abcdef").hex(),
         "fields": {"text": "L" * 32 + "0123456789abcdef0123456789abcdef"}},
        {"name": "log_empty", "description": "empty LOG", "expect": "log", "hex": p.encode_log("").hex(), "fields": {"text": ""}},
        {"name": "unknown_type_7f", "description": "a valid frame of type 0x7F: a host ignores it and counts it", "expect": "unknown_type",
         "hex": p.encode_raw_frame(0x7F, b"\x01\x00\x02").hex(), "fields": {"type": 0x7F, "payload_hex": "010002"}},
    ]
    basic_body = bytes([p.TYPE_SAMPLE]) + p.sample_payload(p.Sample(1, 20000, 0.0, 0.0, 1.0, f32(0.01), f32(-0.02), 0.5))
    basic_raw = basic_body + struct.pack("<H", p.crc16(basic_body))
    flipped_payload = bytearray(basic_raw)
    flipped_payload[9] ^= 0x10
    short_body = bytes([p.TYPE_SAMPLE]) + bytes(range(1, 30))
    frames += [
        _corrupt("corrupt_crc_byte", "sample_basic with one CRC bit flipped", basic_raw[:-1] + bytes([basic_raw[-1] ^ 0x01]), "crc_error"),
        _corrupt("corrupt_payload_bit", "sample_basic with one payload bit flipped", bytes(flipped_payload), "crc_error"),
        _corrupt("corrupt_crc_swapped", "sample_basic with its CRC stored big-endian", basic_body + struct.pack(">H", p.crc16(basic_body)), "crc_error"),
        _corrupt("sample_short_payload", "type SAMPLE with 29 payload bytes and a valid CRC", short_body + struct.pack("<H", p.crc16(short_body)), "malformed"),
        {"name": "cobs_code_past_end", "description": "COBS code byte pointing past the end of the chunk", "expect": "malformed", "hex": "05010200"},
        {"name": "too_short", "description": "decodes to a single byte: no room for type and CRC", "expect": "malformed", "hex": "010100"},
        {"name": "truncated", "description": "sample_basic with its last three wire bytes lost", "expect": "malformed",
         "hex": p.encode_sample(p.Sample(1, 20000, 0.0, 0.0, 1.0, f32(0.01), f32(-0.02), 0.5))[:-4].hex() + "00"},
    ]
    cobs_cases = [b"", b"\x00", b"\x00\x00", b"\x11\x22\x00\x33", bytes(range(1, 255)), bytes(range(1, 256)),
                  bytes([(i % 255) + 1 for i in range(300)]) + b"\x00" + bytes([7] * 10)]
    return {
        "format": "har-frame-test-vectors/1",
        "spec": "firmware_bridge/PROTOCOL.md",
        "crc_check": {"ascii": "123456789", "crc": p.crc16(b"123456789")},
        "frames": frames,
        "cobs": [{"raw_hex": c.hex(), "encoded_hex": cobs.encode(c).hex()} for c in cobs_cases],
    }


def render() -> str:
    return json.dumps(build_vectors(), indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if test_vectors.json is out of date")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        if not VECTORS_PATH.exists() or VECTORS_PATH.read_text() != text:
            print(f"{VECTORS_PATH} is out of date; run: python -m firmware_bridge.make_vectors", file=sys.stderr)
            return 1
        return 0
    VECTORS_PATH.write_text(text)
    print(f"wrote {VECTORS_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
