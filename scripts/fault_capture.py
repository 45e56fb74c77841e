"""Write a raw serial capture (.bin) of a recording played by the virtual device with faults injected
(dropped, corrupted and duplicated frames, garbage bytes): the same bytes a flaky USB line delivers.

    python scripts/fault_capture.py RECORDING.csv OUT.bin [--seed 0]

Deterministic for a seed: the capture is the device's byte stream, read off its pty until it ends.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import serial  # noqa: E402

from firmware_bridge.simulate import Faults, VirtualDevice  # noqa: E402

FAULTS = Faults(drop=0.01, corrupt=0.01, duplicate=0.005, garbage=0.005)


def capture(recording: str, out: str, seed: int = 0, speed: float = 200.0) -> int:
    data = bytearray()
    with VirtualDevice(recording, replace(FAULTS, seed=seed), speed=speed) as device:
        port = serial.serial_for_url(device.port, baudrate=115200, timeout=0.2)
        try:
            quiet_since = None
            while True:
                chunk = port.read(65536)
                data += chunk
                if device.finished and not chunk:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since > 0.5:
                        break
        finally:
            port.close()
    tmp = f"{out}.tmp"
    Path(tmp).write_bytes(bytes(data))
    os.replace(tmp, out)
    return len(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recording")
    parser.add_argument("out")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{args.out}: {capture(args.recording, args.out, args.seed)} bytes, faults {FAULTS}, seed {args.seed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
