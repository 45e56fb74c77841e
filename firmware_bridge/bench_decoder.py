"""Decoder throughput: a million random bytes (must not raise) and valid / damaged frame streams.

    python -m firmware_bridge.bench_decoder [--bytes 1000000] [--chunk 4096] [--seed 0]

Prints frames/s and bytes/s for each stream. Figures depend on the machine: record them
with the command line and the machine in firmware_bridge/README.md.
"""
from __future__ import annotations

import argparse
import random
import struct
import time
from typing import Any

from firmware_bridge.protocol import (
    SEQ_MODULO,
    T_US_MODULO,
    CsvLineDecoder,
    FrameDecoder,
    Sample,
    encode_sample,
    format_csv_line,
)


def run(decoder: FrameDecoder | CsvLineDecoder, data: bytes, chunk: int) -> tuple[float, int]:
    frames = 0
    start = time.perf_counter()
    for i in range(0, len(data), chunk):
        frames += len(decoder.feed(data[i:i + chunk]))
    return time.perf_counter() - start, frames


def report(name: str, data: bytes, seconds: float, frames: int, counters: dict[str, Any]) -> None:
    interesting = {k: v for k, v in counters.items() if v}
    print(f"{name:<28} {len(data):>9} B  {seconds:7.3f} s  {len(data) / seconds / 1e6:6.2f} MB/s  "
          f"{frames / seconds:>10,.0f} frames/s  {interesting}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bytes", type=int, default=1_000_000, help="size of each stream (default 1e6)")
    parser.add_argument("--chunk", type=int, default=4096, help="bytes per feed() call, like a serial read")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    random_bytes = rng.randbytes(args.bytes)
    n_samples = args.bytes // 35  # a SAMPLE frame is 35 bytes on the wire
    samples = [Sample(i % SEQ_MODULO, (i * 20000) % T_US_MODULO, *(struct.unpack("<f", struct.pack("<f", rng.uniform(-2, 2)))[0] for _ in range(6)))
               for i in range(n_samples)]
    valid = b"".join(encode_sample(s) for s in samples)
    damaged = bytearray(valid)
    for _ in range(len(damaged) // 1000):  # about one byte in a thousand hit
        damaged[rng.randrange(len(damaged))] = rng.randrange(256)
    text = b"".join(format_csv_line(s) for s in samples[: args.bytes // 60])

    print(f"chunk {args.chunk} B per feed(); seed {args.seed}")
    for name, data, make in (("random bytes", random_bytes, FrameDecoder),
                             ("valid SAMPLE frames", valid, FrameDecoder),
                             ("frames, 1/1000 bytes hit", bytes(damaged), FrameDecoder),
                             ("text lines (CsvLineDecoder)", text, CsvLineDecoder)):
        decoder = make()
        seconds, frames = run(decoder, data, args.chunk)
        report(name, data, seconds, frames, decoder.counters.as_dict())
    byte_decoder = FrameDecoder()
    seconds, frames = run(byte_decoder, valid[:100_000], 1)
    report("valid, 1 byte per feed()", valid[:100_000], seconds, frames, byte_decoder.counters.as_dict())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
