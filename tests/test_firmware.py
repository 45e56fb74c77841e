"""The firmware side: C framing header vs the shared vectors, the Uno build, the emulated board.

Needs gcc for the host C tests, Debian's arduino-mk / arduino-core-avr / gcc-avr / avr-libc
for the build and qemu-system-avr (qemu-system-misc) for the emulated board. Without them
these tests skip with the reason, unless HAR_REQUIRE_FIRMWARE_TOOLS=1 (CI), where a missing
tool is a failure.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_bridge import emulate
from firmware_bridge.protocol import Sample

BRIDGE = Path(__file__).resolve().parent.parent / "firmware_bridge"
ARDUINO_MK = Path("/usr/share/arduino/Arduino.mk")
REQUIRED = os.environ.get("HAR_REQUIRE_FIRMWARE_TOOLS") == "1"

pytestmark = pytest.mark.firmware


def need(condition: bool, reason: str) -> None:
    if condition:
        return
    if REQUIRED:
        pytest.fail(f"{reason} (HAR_REQUIRE_FIRMWARE_TOOLS=1: firmware tests must run here)")
    pytest.skip(reason)


def make(*targets: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-C", str(BRIDGE), *targets], capture_output=True, text=True, timeout=timeout)


def test_c_header_agrees_with_the_vectors():
    need(shutil.which("make") is not None and shutil.which("gcc") is not None, "make and gcc are needed for the host C tests")
    run = make("host-test", "CC=gcc")
    assert run.returncode == 0, run.stdout + run.stderr
    assert re.search(r"OK: \d+ checks, 0 failures \(19 frame vectors, 7 COBS vectors\)", run.stdout), run.stdout


def test_c_tests_fail_on_a_wrong_vector(tmp_path):
    """The C test is not a rubber stamp: one changed byte in a vector makes it fail."""
    need(shutil.which("gcc") is not None, "gcc is needed for the host C tests")
    vectors = (BRIDGE / "test_vectors.json").read_text()
    tampered = tmp_path / "test_vectors.json"
    tampered.write_text(vectors.replace('"0402013', '"0402017', 1))  # hello_mpu6050's rate byte
    header = subprocess.run(["python3", str(BRIDGE / "c" / "gen_vectors_header.py"), str(tampered)],
                            capture_output=True, text=True, check=True).stdout
    (tmp_path / "test_vectors.h").write_text(header)
    exe = tmp_path / "t"
    subprocess.run(["gcc", "-std=c99", "-Wall", "-Wextra", "-Werror", f"-I{BRIDGE / 'c'}", f"-I{tmp_path}",
                    str(BRIDGE / "c" / "test_har_frame.c"), "-o", str(exe)], check=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == 1 and "hello_mpu6050: C encoder disagrees" in run.stdout


def avr_tools_present() -> bool:
    return ARDUINO_MK.exists() and shutil.which("avr-gcc") is not None and shutil.which("avr-size") is not None


def size_of(output: str) -> tuple[int, int]:
    program = re.search(r"Program:\s+(\d+) bytes", output)
    data = re.search(r"Data:\s+(\d+) bytes", output)
    assert program and data, output
    return int(program.group(1)), int(data.group(1))


@pytest.mark.slow
def test_sketch_builds_for_the_uno_within_flash_and_ram():
    need(avr_tools_present(), "the AVR toolchain is missing: apt-get install arduino-mk arduino-core-avr gcc-avr avr-libc")
    for target in ("firmware", "firmware-synthetic"):
        run = make(target)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        flash, ram = size_of(run.stdout)
        print(f"{target}: flash {flash} B of 32256, RAM {ram} B of 2048")
        # The Uno's bootloader leaves 32256 B of flash; keep a third of RAM free for the stack.
        assert 1000 < flash < 32256 * 0.5 and 100 < ram < 2048 * 2 // 3


@pytest.mark.slow
def test_emulated_board_sends_valid_gap_free_frames_at_50_hz():
    need(avr_tools_present(), "the AVR toolchain is missing: apt-get install arduino-mk arduino-core-avr gcc-avr avr-libc")
    need(shutil.which(emulate.QEMU) is not None, "qemu-system-avr is missing: apt-get install qemu-system-misc")
    build = make("firmware-synthetic")
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    report = emulate.run_emulated(str(BRIDGE / "build-uno-synthetic" / "har_imu.elf"), seconds=4.0)
    print(f"emulated: {len(report.samples)} samples in {report.seconds:.1f} s = {report.rate_hz:.1f}/s, {report.counters}")
    assert report.ok, report.problems
    assert report.counters["crc_errors"] == 0 and report.counters["seq_gaps"] == 0
    # Device time is checked exactly (20 000 us per seq); the wall-clock rate only roughly,
    # to catch a wrong timer setting (a wrong prescaler is off by 8x or more), not jitter.
    assert len(report.samples) >= 60
    assert 20 < report.rate_hz < 80


def test_emulation_checker_catches_gaps_and_wrong_values():
    good = [Sample(i, i * 20000, *emulate.synthetic_signal(i)) for i in range(495, 510)]
    assert emulate.check_samples(good) == []
    gap = good[:5] + good[6:]
    assert any("seq jumps" in p for p in emulate.check_samples(gap))
    wrong = good[:3] + [Sample(498, 498 * 20000, 0.0, *good[3].values()[1:])] + good[4:]
    assert any("differ from the synthetic signal" in p for p in emulate.check_samples(wrong))
    late = good[:3] + [Sample(498, 498 * 20000 + 4, *good[3].values())] + good[4:]
    assert any("t_us steps" in p for p in emulate.check_samples(late))
