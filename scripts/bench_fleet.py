"""Many wearers into one broker and one monitor, on this machine, loopback only.

    python scripts/bench_fleet.py [--wearers 50] [--seconds 60] [--json FILE]

Each wearer is what a Pi runs: a virtual IMU device (firmware_bridge.simulate, real HAPT motion
from the shipped example, looped, at the real 50 Hz) on its own pty, read by its own
`har-edge run --mqtt ... --jsonl ...` process. One Mosquitto broker, one `har-edge monitor`.
The virtual devices run as threads of this script (their CPU is this script's, not a wearer's).

--baseline more wearers run the same pipeline without --mqtt, in the same run: the difference of
their CPU is what publishing costs. After every wearer has produced its first window the monitor
subscribes, and for --seconds:
  - CPU per wearer: utime + stime of each `har-edge run` process over the measurement (/proc);
  - end-to-end delay: from the window's result in the wearer (its `t`) to its arrival at the
    monitor (same clock: one machine);
  - messages lost: windows in a wearer's JSONL with `t` inside the measurement that the monitor
    never received.
Prints the figures (docs/results.md, "Fleet over MQTT").
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from firmware_bridge.simulate import VirtualDevice  # noqa: E402

from edge.paths import EXAMPLE_RECORDING  # noqa: E402

from services import Mosquitto, Output, wait_until  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wearers", type=int, default=50)
    parser.add_argument("--baseline", type=int, default=5,
                        help="extra wearers without --mqtt in the same run: MQTT's own CPU cost, side by side (default 5)")
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement length (default 60)")
    parser.add_argument("--recording", default=str(EXAMPLE_RECORDING))
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory(prefix="bench_fleet_") as tmp:
        root = Path(tmp)
        broker = Mosquitto(root / "broker", extra="max_queued_messages 100000\n").start()
        devices, wearers, outputs = [], [], []
        try:
            started = time.time()
            total = args.wearers + args.baseline
            for i in range(total):  # the first args.wearers publish; the baseline ones only recognize
                device = VirtualDevice(args.recording, speed=1.0, loop=True, link=root / f"imu{i:02d}")
                device.start()
                devices.append(device)
                mqtt = ["--mqtt", broker.url, "--device-id", f"wearer{i:02d}"] if i < args.wearers else []
                proc = subprocess.Popen(
                    [sys.executable, "-m", "edge.cli", "run", "--port", str(root / f"imu{i:02d}"), "--quiet", *mqtt,
                     "--jsonl", str(root / f"w{i:02d}.jsonl"), "--report-every", "10"],
                    cwd=REPO, env=env, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                wearers.append(proc)
                outputs.append(Output(proc.stderr))
            print(f"bench_fleet: {args.wearers} publishing + {args.baseline} baseline wearers started; waiting for "
                  "each one's first window", flush=True)
            wait_until(lambda: all((root / f"w{i:02d}.jsonl").exists() and (root / f"w{i:02d}.jsonl").stat().st_size
                                   for i in range(total)), "every wearer's first window", 600, 0.5)
            print(f"bench_fleet: all wearers recognizing after {time.time() - started:.0f} s; monitor subscribing",
                  flush=True)
            stats_path = root / "monitor.json"
            monitor = subprocess.Popen([sys.executable, "-m", "edge.cli", "monitor", "--mqtt", broker.url, "--quiet",
                                        "--stats-json", str(stats_path)], cwd=REPO, env=env, text=True,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            monitor_out = Output(monitor.stderr)
            monitor_out.wait_for("subscribed to har/+/")
            time.sleep(2.0)
            load_before = os.getloadavg()
            t0 = time.time()
            assert broker.proc is not None  # started
            broker_pid = broker.proc.pid
            cpu0 = [cpu_seconds(p.pid) for p in wearers]
            side0 = {name: cpu_seconds(pid) for name, pid in
                     (("broker", broker_pid), ("monitor", monitor.pid), ("simulators", os.getpid()))}
            time.sleep(args.seconds)
            t1 = time.time()
            cpu1 = [cpu_seconds(p.pid) for p in wearers]
            side1 = {name: cpu_seconds(pid) for name, pid in
                     (("broker", broker_pid), ("monitor", monitor.pid), ("simulators", os.getpid()))}
            rss = [rss_mb(p.pid) for p in wearers]
            load_during = os.getloadavg()
            elapsed = t1 - t0
            for proc in wearers:
                proc.send_signal(signal.SIGINT)
            for proc in wearers:
                proc.wait(timeout=120)
            time.sleep(2.0)  # the last windows' way to the monitor
            monitor.send_signal(signal.SIGINT)
            monitor.wait(timeout=60)
        finally:
            for proc in wearers:
                if proc.poll() is None:
                    proc.kill()
            for device in devices:
                device.stop()
            broker.stop()
        stats = json.loads(stats_path.read_text())
        expected = lost = received = 0
        delays = []
        for i in range(args.wearers):
            device_id = f"wearer{i:02d}"
            lines = [json.loads(line) for line in (root / f"w{i:02d}.jsonl").read_text().splitlines()]
            sent = {(r["sample_end"], r["t"]) for r in lines if t0 <= r["t"] <= t1}
            rows = stats["devices"].get(device_id, {}).get("history", [])
            got = {(end, t) for end, t, _ in rows}
            expected += len(sent)
            received += len(sent & got)
            lost += len(sent - got)
            delays += [(arrival - t) * 1e3 for end, t, arrival in rows if (end, t) in sent]
        cpu_all = [100 * (b - a) / elapsed for a, b in zip(cpu0, cpu1)]
        cpu, cpu_baseline = cpu_all[:args.wearers], cpu_all[args.wearers:]
        figures = {
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "wearers": args.wearers, "seconds": round(elapsed, 1), "cores": os.cpu_count(),
            "load_average_1min": [round(load_before[0], 2), round(load_during[0], 2)],
            "windows_in_measurement": expected, "received_by_monitor": received, "lost": lost,
            "duplicates": stats["duplicates"], "malformed": stats["malformed"],
            "delay_ms": {"median": round(statistics.median(delays), 1), "p95": round(percentile(delays, 95), 1),
                         "p99": round(percentile(delays, 99), 1), "max": round(max(delays), 1)} if delays else None,
            "cpu_per_wearer_pct_of_one_core": {"median": round(statistics.median(cpu), 2),
                                               "max": round(max(cpu), 2), "sum": round(sum(cpu), 1)},
            "cpu_per_baseline_wearer_without_mqtt_pct": {"median": round(statistics.median(cpu_baseline), 2),
                                                         "n": len(cpu_baseline)} if cpu_baseline else None,
            "rss_per_wearer_mb_median": round(statistics.median(rss[:args.wearers]), 1),
            "cpu_pct_of_one_core": {name: round(100 * (side1[name] - side0[name]) / elapsed, 1) for name in side0},
        }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if lost == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
