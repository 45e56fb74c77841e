"""Emulated-board test: runs the synthetic-sensor firmware in qemu-system-avr with its UART
on a pseudo-terminal and checks what the host decoder gets from it.

    python -m firmware_bridge.emulate firmware_bridge/build-uno-synthetic/har_imu.elf --seconds 5

Checks: HELLO from the synthetic build, SAMPLE frames with no CRC errors, no malformed frames,
no sequence gaps, device time advancing exactly 20 000 us per seq, and the values equal to
the synthetic signal the sketch computes. Prints the wall-clock frame rate (about 50/s).
QEMU 7.2 emulates Timer1 (the sketch's 50 Hz tick) but not Timer0 (millis), see
../shared/docs/firmware.md; bytes sent before the pty is opened are lost, so the first
partial frame counts as garbage and the boot HELLO may be missed (the next comes 5 s later).
"""
from __future__ import annotations

import argparse
import math
import os
import re
import select
import shutil
import subprocess
import sys
import time
import tty
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.protocol import SEQ_MODULO, T_US_MODULO, FrameDecoder, Hello, Sample

QEMU = "qemu-system-avr"
SYNTHETIC_PERIOD_TICKS = 500
RATE_HZ = 50


class EmulationError(RuntimeError):
    """qemu is missing, did not start, or produced no pty."""


def synthetic_signal(seq: int) -> tuple[float, float, float, float, float, float]:
    """The sketch's HAR_SYNTHETIC_SENSOR signal for a sample index (see har_imu.ino)."""
    t = (seq % SYNTHETIC_PERIOD_TICKS) / RATE_HZ
    step = math.sin(2 * math.pi * 1.8 * t)
    sway = math.sin(2 * math.pi * 0.9 * t)
    return (1.0 + 0.25 * step, 0.10 * sway, 0.05 * step * sway, 0.20 * sway, 0.50 * step, -0.30 * sway)


@dataclass
class EmulationReport:
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    hellos: list[Hello] = field(default_factory=list)
    counters: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def rate_hz(self) -> float:
        return len(self.samples) / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_samples(samples: list[Sample], tolerance: float = 1e-3) -> list[str]:
    """Problems with a run of samples from the synthetic firmware (empty list: all good)."""
    problems = []
    for prev, cur in zip(samples, samples[1:]):
        if (cur.seq - prev.seq) % SEQ_MODULO != 1:
            problems.append(f"seq jumps from {prev.seq} to {cur.seq}")
        if (cur.t_us - prev.t_us) % T_US_MODULO != 1_000_000 // RATE_HZ:
            problems.append(f"t_us steps by {(cur.t_us - prev.t_us) % T_US_MODULO} us at seq {cur.seq}, expected 20000")
    for s in samples:
        expected = synthetic_signal(s.seq)
        worst = max(abs(a - b) for a, b in zip(s.values(), expected))
        if worst > tolerance:
            problems.append(f"seq {s.seq}: values {s.values()} differ from the synthetic signal {expected} by {worst:.3g}")
    return problems[:20]


def run_emulated(elf: str, seconds: float = 5.0, qemu: str = QEMU) -> EmulationReport:
    if shutil.which(qemu) is None:
        raise EmulationError(f"{qemu} not found: install Debian's qemu-system-misc (apt-get install qemu-system-misc)")
    if not os.path.isfile(elf):
        raise EmulationError(f"firmware {elf} not found: build it with `make -C firmware_bridge firmware-synthetic`")
    proc = subprocess.Popen(
        [qemu, "-machine", "uno", "-bios", elf, "-nographic", "-serial", "pty", "-monitor", "none"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    stdout = proc.stdout
    assert stdout is not None  # stdout=PIPE
    fd = -1
    try:
        pty_path = None
        deadline = time.monotonic() + 20
        while pty_path is None and time.monotonic() < deadline:
            ready_out, _, _ = select.select([stdout], [], [], 0.5)
            if ready_out:
                line = stdout.readline()
                if not line and proc.poll() is not None:
                    break
                match = re.search(r"char device redirected to (\S+)", line)
                if match:
                    pty_path = match.group(1)
        if pty_path is None:
            raise EmulationError(f"{qemu} did not report a pty (exit code {proc.poll()})")
        fd = os.open(pty_path, os.O_RDONLY | os.O_NOCTTY)
        tty.setraw(fd)
        decoder = FrameDecoder()
        report = EmulationReport(seconds=seconds)
        start = time.monotonic()
        while (left := start + seconds - time.monotonic()) > 0:
            ready, _, _ = select.select([fd], [], [], min(left, 0.5))
            if not ready:
                continue
            for frame in decoder.feed(os.read(fd, 4096)):
                if isinstance(frame, Sample):
                    report.samples.append(frame)
                elif isinstance(frame, Hello):
                    report.hellos.append(frame)
        report.seconds = time.monotonic() - start
    finally:
        if fd >= 0:
            os.close(fd)
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    c = decoder.counters
    report.counters = c.as_dict()
    if not report.samples:
        report.problems.append("no SAMPLE frames arrived")
    for name in ("crc_errors", "malformed", "seq_gaps", "lost_samples", "duplicates", "unknown_types"):
        if getattr(c, name):
            report.problems.append(f"{name} = {getattr(c, name)}")
    if any(h.sensor != "synthetic" or h.version != 1 or h.rate_hz != RATE_HZ for h in report.hellos):
        report.problems.append(f"unexpected HELLO: {report.hellos}")
    report.problems += check_samples(report.samples)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run the synthetic-sensor firmware in qemu-system-avr and check its frames.")
    parser.add_argument("elf", help="the synthetic build, e.g. firmware_bridge/build-uno-synthetic/har_imu.elf")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long to listen (default 5)")
    args = parser.parse_args(argv)
    try:
        report = run_emulated(args.elf, args.seconds)
    except EmulationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"emulated board: {len(report.samples)} samples, {len(report.hellos)} HELLO in {report.seconds:.1f} s "
          f"= {report.rate_hz:.1f} samples/s; counters {report.counters}")
    for problem in report.problems:
        print(f"FAIL: {problem}")
    print("OK: frames valid and gap-free" if report.ok else "FAILED")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
