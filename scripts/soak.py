"""Accelerated 24-hour soak: 4.32 M samples (24 h at 50 Hz) through `har-edge run` over the virtual device.

    python scripts/soak.py [--samples 4320000] [--speed 1000] [--out runs/soak] [--record]

The virtual device (firmware_bridge.simulate) loops the shipped example recording with faults: drops,
CRC errors, duplicates and garbage (0.05% of samples each), two reboots with the port kept open (at 20,000
and 50,000 stream seconds: seq 16,960 and, in the second boot, seq 58,176 > 32,768), and two unplugs of
5 s (at 35,000 and 70,005 s). `har-edge run` reads its pty as it reads a board, in a subprocess whose
resident memory is sampled every few seconds. At the end the script checks, and prints:

- memory: resident set after the first 10% of the stream, and its range over the rest (flat within 5%);
- windows: every window the stream allows, computed from what the device sent (segments restart at
  each reboot and reconnect), emitted once, in order, on its segment's grid;
- counters: lost, lost in outages, duplicates, CRC errors + malformed, garbage bytes, device restarts
  and reconnects equal to what the device injected; status events one per reboot and per link change.

With `--record` the command is `har-edge record --out soak.csv` (with the model, so the same checks
apply) and the recording is checked too: one row per sample that arrived, written as it came.

Exit 0 when every check holds. Not part of the test suite (minutes of CPU); docs/results.md has a run.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_bridge.simulate import Faults, VirtualDevice  # noqa: E402

from edge.paths import DEFAULT_BUNDLE, EXAMPLE_RECORDING  # noqa: E402

WINDOW, HOP, MAX_INTERPOLATED = 128, 64, 5
RATE_HZ = 50.0


def soak_faults(samples: int, seed: int) -> Faults:
    """The 24-hour schedule (reboots at 20,000 and 50,000 s, unplugs at 35,000 and 70,005 s), scaled to
    the stream's length so that a shorter run (--samples) meets the same events."""
    scale = samples / RATE_HZ / 86_400.0
    return Faults(drop=0.0005, corrupt=0.0005, duplicate=0.0005, garbage=0.0005,
                  disconnect_every=35_000.0 * scale, disconnect_for=5.0,
                  reboot_at=(20_000.0 * scale, 50_000.0 * scale), seed=seed)


def first_index_at(seconds: float) -> int:
    """The first stream sample at or after `seconds` (where the device applies a fault scheduled there)."""
    index = int(seconds * RATE_HZ)
    while index / RATE_HZ < seconds:
        index += 1
    return index


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def expected_stream(n: int, faults: Faults, lost: set[int], outage: set[int]) -> dict:
    """What the host must see, from what the device sent: window ends by stream position, and counts.

    Stream positions follow the device's seq; after a reboot the first sample that arrives takes the
    position after the last one seen (nothing lost); after a reconnect (the device kept sampling) the
    positions follow its seq across the outage."""
    reboots = {first_index_at(t) for t in faults.reboot_at}
    ends: list[int] = []
    lost_inside = outage_positions = 0
    position = previous = -1  # of the last sample that arrived
    last_index = None  # its stream index
    seg_start = 0  # position where the current window grid started (set by the first sample: pending_reset)
    pending_reset = True  # next arriving sample starts a segment
    rebooted = False
    in_outage = False
    for i in range(n):
        if i in reboots:
            rebooted, pending_reset = True, True  # the lost tail of a boot is never counted
        if i in outage:
            in_outage = True
            continue
        if i in lost:
            continue
        if last_index is None:
            position = i
        elif rebooted:
            position += 1
        elif in_outage:
            outage_positions += i - last_index - 1
            position += i - last_index
            pending_reset = True
        else:
            missing = i - last_index - 1
            lost_inside += missing
            position += i - last_index
            if missing > MAX_INTERPOLATED:
                pending_reset = True
        if pending_reset:
            seg_start, pending_reset, first_new = position, False, position
        else:
            first_new = previous + 1  # a short hole is interpolated once this sample came: those positions too
        for q in range(first_new, position + 1):
            if q + 1 - seg_start >= WINDOW and (q + 1 - seg_start - WINDOW) % HOP == 0:
                ends.append(q + 1)
        previous = position
        last_index, rebooted, in_outage = i, False, False
    return {"ends": ends, "lost_samples": lost_inside, "outage_samples": outage_positions}


def parse_counters(stderr: str) -> dict[str, int]:
    line = [l for l in stderr.splitlines() if "final counters:" in l][-1]
    wanted = {"windows": r"windows (\d+)", "samples": r"samples (\d+)", "lost": r"lost (\d+)",
              "lost_in_outages": r"lost in outages (\d+)", "out_of_order": r"out of order (\d+)",
              "duplicates": r"duplicates (\d+)", "device_restarts": r"device restarts (\d+)",
              "reconnects": r"reconnects (\d+)", "crc_errors": r"crc errors (\d+)", "malformed": r"malformed (\d+)",
              "garbage_bytes": r"garbage bytes (\d+)", "long_gaps": r"long gaps (\d+)"}
    found = {k: re.search(p, line) for k, p in wanted.items()}
    missing = [k for k, m in found.items() if m is None]
    if missing:
        raise SystemExit(f"soak: the counters line lacks {', '.join(missing)}: {line!r}")
    return {k: int(m.group(1)) for k, m in found.items() if m is not None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4_320_000, help="stream samples (default 24 h at 50 Hz)")
    parser.add_argument("--speed", type=float, default=1000.0, help="times real time the device plays at (default 1000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default="runs/soak", help="folder for the JSONL and soak.json")
    parser.add_argument("--rss-every", type=float, default=5.0, metavar="S")
    parser.add_argument("--record", action="store_true", help="run `har-edge record --out soak.csv` instead of `run`")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jsonl = out / "soak.jsonl"
    faults = soak_faults(args.samples, args.seed)
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "imu"
        device = VirtualDevice(EXAMPLE_RECORDING, faults, speed=args.speed, link=link, samples=args.samples)
        device.start()
        command = [sys.executable, "-m", "edge.cli", "record" if args.record else "run", "--port", str(link),
                   "--bundle", str(DEFAULT_BUNDLE), "--jsonl", str(jsonl), "--quiet", "--report-every", "0"]
        if args.record:
            command += ["--out", str(out / "soak.csv")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
        rss: list[tuple[int, int]] = []  # (stream samples produced so far, VmRSS KiB)
        try:
            while not device.finished:
                device.wait(args.rss_every)
                kib = rss_kib(proc.pid)
                if kib:
                    rss.append((device.injected.samples_total, kib))
                    print(f"soak: {device.injected.samples_total:,} / {args.samples:,} samples, "
                          f"RSS {kib / 1024:.1f} MiB, {time.time() - started:.0f} s", flush=True)
            size = -1
            while size != jsonl.stat().st_size:  # the last windows written
                size = jsonl.stat().st_size
                time.sleep(2.0)
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
            device.stop()
    wall = time.time() - started
    inj = device.injected
    disconnect_lost: set[int] = set()
    t_next, every = faults.disconnect_every, faults.disconnect_every
    while t_next is not None and every is not None and first_index_at(t_next) < args.samples:  # the spans the device was unplugged
        first = first_index_at(t_next)
        disconnect_lost.update(range(first, min(args.samples, first + round(faults.disconnect_for * RATE_HZ))))
        t_next += every + faults.disconnect_for
    lost = set(inj.lost_indices) - disconnect_lost
    expect = expected_stream(args.samples, faults, lost, disconnect_lost)
    counters = parse_counters(stderr)
    windows: list[dict[str, Any]] = []
    statuses: dict[str, Any] = {}
    with jsonl.open() as f:
        for line in f:
            obj = json.loads(line)
            if obj.get("type") == "status":
                statuses[obj["event"]] = statuses.get(obj["event"], 0) + 1
            else:
                windows.append(obj["sample_end"])
    after_warmup = [kib for produced, kib in rss if produced >= args.samples // 10]
    checks = {
        "every window, once, in order": windows == expect["ends"],
        "windows counted": counters["windows"] == len(expect["ends"]),
        "lost": counters["lost"] == expect["lost_samples"],
        "lost in outages": counters["lost_in_outages"] == expect["outage_samples"],
        "duplicates": counters["duplicates"] == inj.duplicated,
        "crc errors + malformed": counters["crc_errors"] + counters["malformed"] == inj.corrupted + inj.garbage_bursts,
        "garbage bytes": counters["garbage_bytes"] == inj.garbage_bytes + inj.corrupted_bytes,
        "device restarts": counters["device_restarts"] == inj.reboots == 2,
        "reconnects": counters["reconnects"] == inj.disconnects == 2,
        "status events": (statuses.get("device_restart"), statuses.get("disconnected"),
                          statuses.get("reconnected"), statuses.get("connected")) == (2, 2, 2, 1),
        "memory flat within 5%": bool(after_warmup) and max(after_warmup) <= 1.05 * min(after_warmup),
    }
    if args.record:
        with (out / "soak.csv").open() as f:
            rows = sum(1 for _ in f) - 1  # the header
        checks["recording: one row per sample that arrived"] = rows == inj.samples_sent
    result = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()), "command": "record" if args.record else "run",
        "samples": args.samples, "speed": args.speed,
        "seed": args.seed, "wall_seconds": round(wall, 1), "samples_per_second": round(args.samples / wall),
        "faults": faults.active(), "injected": inj.as_dict(), "counters": counters, "status_events": statuses,
        "windows": len(windows), "expected_windows": len(expect["ends"]),
        "expected_lost": expect["lost_samples"], "expected_outage": expect["outage_samples"],
        "rss_mib": {"after_10pct": round(after_warmup[0] / 1024, 1) if after_warmup else None,
                    "min": round(min(after_warmup) / 1024, 1) if after_warmup else None,
                    "max": round(max(after_warmup) / 1024, 1) if after_warmup else None,
                    "samples": len(after_warmup)},
        "checks": checks,
    }
    (out / "soak.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    bad = [name for name, ok in checks.items() if not ok]
    print("soak: " + ("PASS" if not bad else "FAIL: " + ", ".join(bad)))
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
