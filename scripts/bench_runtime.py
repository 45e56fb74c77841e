"""Before / after figures of the lean runtime (issue 16), measured side by side in one run.

    python scripts/bench_runtime.py [--before 423392d] [--live-seconds 30] [--live-rounds 1] [--repeats 5]

"before" is the tree of git revision --before (exported to a temporary directory), "after" this working
tree; every figure is measured on both in the same run, interleaved, each a median of --repeats runs:
start-up (`python -c "import numpy"`, `har-edge --help`, `--version`, `replay` of a 200-sample file),
replay of a 1-minute and a 2-hour recording (whole command: wall time and peak resident memory),
live `har-edge run` on the virtual device at 50 Hz (CPU per sample, last sample -> label latency, peak
memory), per-window stage costs of the live path (the best of --repeats passes, at least 3), int8 vs fp32
invoke time, and the labels of both trees on the shipped example and a fault-injected capture. Figures only;
nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from firmware_bridge.protocol import SEQ_MODULO, T_US_MODULO  # noqa: E402  (the wire's counters, for the test files)

EXAMPLE = REPO / "edge" / "examples" / "user01_exp01.csv"

STAGES_CODE = r"""
import json, sys, time
import numpy as np
from firmware_bridge.protocol import FrameDecoder, encode_sample
from firmware_bridge.recording import read_recording
try:
    from edge.model import load_model
    from edge.pipeline import Pipeline
except ImportError:  # a tree from before edge/runtime.py was split (423392d)
    from edge.runtime import Pipeline, load_model
from edge.sources import ByteChunk
model = load_model(precision=sys.argv[1])
samples = read_recording(sys.argv[2]).samples[:6400]
frames = [encode_sample(s) for s in samples]
passes = int(sys.argv[3]) if len(sys.argv) > 3 else 3  # the best of this many passes of each kind
best = None
for _ in range(passes):
    pipeline = Pipeline(model, decoder=FrameDecoder(), notify=lambda m: None)
    for frame in frames:
        pipeline.process(ByteChunk(frame, time.perf_counter()))
    t = pipeline.timers
    row = {s: 1e6 * t.seconds[s] / max(1, pipeline.windows) for s in t.STAGES}
    best = row if best is None or row["pipeline"] < best["pipeline"] else best
from edge.sources import SampleBlock
raw = np.array([s.values() for s in samples], dtype=np.float64)
seq = np.array([s.seq for s in samples], dtype=np.int64)
t_us = np.array([s.t_us for s in samples], dtype=np.int64)
block = None
for _ in range(passes):  # 64-sample blocks: the per-window stages without the per-frame decode
    pipeline = Pipeline(model, notify=lambda m: None)
    for i in range(0, len(seq), 64):
        pipeline.process(SampleBlock(seq[i:i + 64], t_us[i:i + 64], raw[i:i + 64], time.perf_counter()))
    t = pipeline.timers
    row = {s: 1e6 * t.seconds[s] / max(1, pipeline.windows) for s in t.STAGES}
    block = row if block is None or row["pipeline"] < block["pipeline"] else block
best = {"frame": best, "block": block}
interp = getattr(model.session, "interpreter", None)
if interp is not None:
    times = []
    for _ in range(500):
        t0 = time.perf_counter(); interp.invoke(); times.append(time.perf_counter() - t0)
    best["invoke_only"] = 1e6 * float(np.median(times))
    times = []
    x = np.zeros((1, 128, 9), np.float32)
    for _ in range(500):
        t0 = time.perf_counter(); model.session.predict(x); times.append(time.perf_counter() - t0)
    best["predict"] = 1e6 * float(np.median(times))
print(json.dumps(best))
"""


# The floor of "device -> label line" here: pyserial reads of the port and the protocol decoder, a line printed
# at every window end and nothing else (no pipeline, no model): pty, wake-ups, pipe and this harness.
BARE_READER_CODE = r"""
import json, sys, time
import serial
from firmware_bridge.protocol import FrameDecoder
port = serial.serial_for_url(sys.argv[1], baudrate=115200, timeout=0.5, exclusive=True)
decoder, n, end = FrameDecoder(), 0, time.perf_counter() + float(sys.argv[2])
while time.perf_counter() < end:
    data = port.read(port.in_waiting or 1)
    if len(data) == 1 and port.in_waiting:
        data += port.read(port.in_waiting)
    for frame in decoder.feed(data):
        if hasattr(frame, "seq"):
            n += 1
            if n >= 128 and (n - 128) % 64 == 0:
                sys.stdout.write(json.dumps({"sample_end": n, "latency_ms": 0.0}) + "\n")
                sys.stdout.flush()
"""


# A reader that is ready when the label line comes, to take the receiving end's own wake-up out of "device -> label
# line": between windows it sleeps (select) until READY_EARLY_S before the next line is due, then polls the pipe
# without sleeping until the line is there (or 50 ms late, then it blocks). It stamps each line with
# time.perf_counter() (CLOCK_MONOTONIC: one clock for every process of the machine) and passes it on as
# "STAMP LINE". The runtime's stdout goes to it; the harness reads what it passes on.
READY_EARLY_S = 0.005
READY_READER_CODE = r"""
import fcntl, os, select, sys, time
fd, period, early = sys.stdin.fileno(), float(sys.argv[1]), float(sys.argv[2])
fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
pending, due = b"", None
while True:
    if due is not None and (wait := due - early - time.perf_counter()) > 0:
        select.select([fd], [], [], wait)
    while True:
        try:
            chunk = os.read(fd, 65536)
            break
        except BlockingIOError:
            if due is None or time.perf_counter() > due + 0.05:
                select.select([fd], [], [])
    seen = time.perf_counter()
    if not chunk:
        break
    *lines, pending = (pending + chunk).split(b"\n")
    for line in lines:
        sys.stdout.write(f"{seen!r} {line.decode()}\n")
        if b'"sample_end"' in line:
            due = seen + period
    sys.stdout.flush()
"""


def env_for(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS="1")
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # both trees run from compiled modules, as a pip install leaves them
    return env


def compile_tree(tree: Path) -> None:
    """Byte-compile the runtime's packages (pip does at install): start-up then measures imports, not compiling."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "edge", "firmware_bridge"], cwd=tree, env=env_for(tree),
                   check=True, stdout=subprocess.DEVNULL)


def timed(command: list[str], tree: Path, stdout=subprocess.DEVNULL) -> tuple[float, float, float]:
    """-> (wall s, CPU s, peak RSS MiB) of one run of command, from wait4's rusage of that child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, cwd=tree, env=env_for(tree), stdout=stdout, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, command))} in {tree} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def median_of(runs: list[tuple[float, float, float]]) -> dict:
    return {"wall_s": statistics.median(r[0] for r in runs), "cpu_s": statistics.median(r[1] for r in runs),
            "peak_rss_mib": statistics.median(r[2] for r in runs)}


def tiled_recording(path: Path, minutes: float) -> Path:
    """The example repeated to `minutes` of 50 Hz samples, seq and t_us continuing (a long labelled recording)."""
    lines = EXAMPLE.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    n = int(minutes * 60 * 50)
    with path.open("w") as out:
        out.write(header + "\n")
        for i in range(n):
            _, _, rest = rows[i % len(rows)].split(",", 2)
            out.write(f"{i % SEQ_MODULO},{(i * 20000) % T_US_MODULO},{rest}\n")
    return path


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def live(tree: Path, precision: str, seconds: float, workdir: Path, extra: tuple[str, ...] = (),
         ready_reader: bool = False) -> dict:
    """`har-edge run` of `tree` on the virtual device at 50 Hz (precision "bare": the bare reader instead): CPU per
    sample in the steady state (from the first window's label to the last's, so start-up is not counted), latency,
    peak RSS. `ready_reader`: the label lines are received by READY_READER_CODE instead of this harness's thread."""
    from firmware_bridge.simulate import VirtualDevice

    link = workdir / f"imu-{tree.name}-{precision}{''.join(extra)}"
    written: list[float] = []  # when the device wrote each chunk: [0] its HELLO, [k] stream sample k - 1
    with VirtualDevice(EXAMPLE, speed=1.0, link=link, loop=True, write_times=written):
        command = [sys.executable, "-c", BARE_READER_CODE, str(link), str(seconds)] if precision == "bare" else \
            [sys.executable, "-m", "edge.cli", "run", "--port", str(link), "--jsonl", "-", "--quiet",
             "--precision", precision, "--duration", str(seconds), "--report-every", "0", *extra]
        proc = subprocess.Popen(command, cwd=tree, env=env_for(tree), stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=not ready_reader)
        lines = proc.stdout
        relay = None
        if ready_reader:
            relay = subprocess.Popen([sys.executable, "-c", READY_READER_CODE, "1.28", str(READY_EARLY_S)],
                                     stdin=proc.stdout, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None and relay.stdout is not None  # stdout=PIPE
            proc.stdout.close()  # the relay holds it now
            lines = relay.stdout
        latencies: list[float] = []
        device_to_line: list[float] = []  # ms from the device's write of a window's last sample to its label line
        marks: list[tuple[int, float]] = []  # (windows so far, CPU s of the process)

        def read() -> None:
            assert lines is not None  # stdout=PIPE
            for line in lines:
                seen = time.perf_counter()
                if ready_reader:
                    stamp, line = line.split(" ", 1)
                    seen = float(stamp)
                result = json.loads(line)
                if "sample_end" not in result:  # a status line ("type": "status"), not a window
                    continue
                latencies.append(result["latency_ms"])
                end = result["sample_end"]  # one past the window's last sample = its chunk's index
                if end < len(written):
                    device_to_line.append(1e3 * (seen - written[end]))
                try:
                    marks.append((len(latencies), _cpu_s(proc.pid)))
                except OSError:
                    pass
        reader = threading.Thread(target=read)
        reader.start()
        _, _, usage = os.wait4(proc.pid, 0)
        reader.join()
        if relay is not None:
            relay.wait()
    hop = 64
    steady = (marks[-1][1] - marks[0][1]) / ((marks[-1][0] - marks[0][0]) * hop) if len(marks) > 1 else float("nan")
    return pooled([{"cpu_us_per_sample": 1e6 * steady, "cpu_s_total": usage.ru_utime + usage.ru_stime,
                    "peak_rss_mib": usage.ru_maxrss / 1024, "latencies_ms": latencies,
                    "device_to_line_ms": device_to_line}])


def pooled(rounds: list[dict]) -> dict:
    """One row's live runs (rounds) -> its figures: latency medians and p99 over every window of every round,
    the median round's CPU per sample, the largest peak memory."""
    latencies = [x for r in rounds for x in r["latencies_ms"]]
    device_to_line = [x for r in rounds for x in r["device_to_line_ms"]]

    def p99(values: list[float]) -> float | None:
        return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))] if values else None

    return {"cpu_us_per_sample": statistics.median(r["cpu_us_per_sample"] for r in rounds),
            "cpu_s_total": sum(r["cpu_s_total"] for r in rounds), "rounds": len(rounds),
            "windows": len(latencies),
            "latency_median_ms": statistics.median(latencies) if latencies else None,
            "latency_p99_ms": p99(latencies),
            "device_to_line_median_ms": statistics.median(device_to_line) if device_to_line else None,
            "device_to_line_p99_ms": p99(device_to_line),
            "peak_rss_mib": max(r["peak_rss_mib"] for r in rounds),
            "latencies_ms": latencies, "device_to_line_ms": device_to_line}


# Both trees with the post-processing the runtime ships with now (no smoother, no "uncertain" floor): the
# defaults changed after `before`, and this compares the pipeline, not the defaults.
SAME_POSTPROCESSING = ["--smoothing", "none", "--threshold", "0"]


def labels_of(tree: Path, recording: Path, precision: str, out: Path) -> list[tuple]:
    """(sample_end, label, raw_label, probs) of every window of a replay."""
    subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(recording), "--quiet", "--precision", precision,
                    *SAME_POSTPROCESSING, "--jsonl", str(out)], cwd=tree, env=env_for(tree), check=True,
                   stderr=subprocess.DEVNULL)
    return [(r["sample_end"], r["label"], r["raw_label"], r["probs"])
            for r in map(json.loads, out.read_text().splitlines()) if "sample_end" in r]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", default="423392d", help="git revision of 'today's' runtime (default 423392d)")
    parser.add_argument("--live-seconds", type=float, default=30.0, help="seconds of each live row, per round")
    parser.add_argument("--live-rounds", type=int, default=1,
                        help="live: run the rows in turn this many times; each row's latencies pooled over its rounds")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    parser.add_argument("--ready-reader", action="store_true",
                        help="live: also receive the label lines with a reader that polls for them when due (the "
                             "receiving end's wake-up taken out), in three more rows")
    parser.add_argument("--parts", default="startup,replay,stages,labels,live",
                        help="which measurements, comma-separated (default all: startup,replay,stages,labels,live)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    py = sys.executable
    figures: dict = {"before": args.before, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "load": " ".join(Path("/proc/loadavg").read_text().split()[:3])}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        before = work / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
        trees = {"before": before, "after": REPO}
        for tree in trees.values():
            compile_tree(tree)
        short = tiled_recording(work / "short.csv", 200 / 3000)
        minute = tiled_recording(work / "minute.csv", 1)
        two_hours = tiled_recording(work / "two_hours.csv", 120)
        faults = work / "faults.bin"
        subprocess.run([py, "scripts/fault_capture.py", str(EXAMPLE), str(faults)], cwd=REPO, env=env_for(REPO),
                       check=True, stdout=subprocess.DEVNULL)

        if "startup" in parts:
            print("start-up", file=sys.stderr, flush=True)
            commands = {"import numpy": [py, "-c", "import numpy"], "--help": [py, "-m", "edge.cli", "--help"],
                        "--version": [py, "-m", "edge.cli", "--version"],
                        "replay 200 samples": [py, "-m", "edge.cli", "replay", str(short), "--quiet", "--precision", "int8"]}
            startup: dict = {}
            for name, command in commands.items():
                for label, tree in trees.items():
                    if name == "--version" and label == "before":
                        continue  # no --version before
                    runs = [timed(command, tree) for _ in range(args.repeats)]
                    startup.setdefault(name, {})[label] = median_of(runs)
            figures["startup"] = startup

        if "replay" in parts:
            print("replay", file=sys.stderr, flush=True)
            replay: dict = {}
            for name, path, stream_s in (("1 minute", minute, 60.0), ("2 hours", two_hours, 7200.0)):
                for label, tree in trees.items():
                    runs = [timed([py, "-m", "edge.cli", "replay", str(path), "--quiet", "--precision", "int8"], tree)
                            for _ in range(max(1, args.repeats // 2))]
                    row = median_of(runs)
                    row["realtime_factor"] = stream_s / row["wall_s"]
                    replay.setdefault(name, {})[label] = row
            figures["replay"] = replay

        if "stages" in parts:
            print("per-window stage costs", file=sys.stderr, flush=True)
            stages: dict = {}
            for precision in ("int8", "fp32"):
                for label, tree in trees.items():
                    out = subprocess.run([py, "-c", STAGES_CODE, precision, str(EXAMPLE), str(max(3, args.repeats))],
                                         cwd=tree, env=env_for(tree),
                                         check=True, capture_output=True, text=True).stdout
                    stages.setdefault(precision, {})[label] = json.loads(out.strip().splitlines()[-1])
            figures["stages_us_per_window"] = stages

        if "labels" in parts:
            print("labels", file=sys.stderr, flush=True)
            parity: dict = {}
            for name, path in (("example", EXAMPLE), ("fault-injected capture", faults)):
                for precision in ("int8", "fp32"):
                    a = labels_of(before, path, precision, work / "a.jsonl")
                    b = labels_of(REPO, path, precision, work / "b.jsonl")
                    parity[f"{name} {precision}"] = {
                        "windows": len(a), "differing": sum(x[:3] != y[:3] for x, y in zip(a, b)) + abs(len(a) - len(b)),
                        "max_prob_difference": max(abs(x[3][c] - y[3][c]) for x, y in zip(a, b) for c in x[3])}
            figures["labels"] = parity

        if "live" in parts and args.live_seconds > 0:
            print("live", file=sys.stderr, flush=True)
            seconds = args.live_seconds
            live_rows = {"before int8": lambda: live(before, "int8", seconds, work),
                    "after int8": lambda: live(REPO, "int8", seconds, work),
                    "after auto": lambda: live(REPO, "auto", seconds, work),
                    "after int8 no prewarm": lambda: live(REPO, "int8", seconds, work, ("--no-prewarm",)),
                    "bare reader": lambda: live(REPO, "bare", seconds, work)}
            if args.ready_reader:  # the same, received by a reader that is ready for the line
                live_rows |= {"after int8, ready": lambda: live(REPO, "int8", seconds, work, ready_reader=True),
                         "after int8 no prewarm, ready": lambda: live(REPO, "int8", seconds, work, ("--no-prewarm",),
                                                                      ready_reader=True),
                         "bare reader, ready": lambda: live(REPO, "bare", seconds, work, ready_reader=True)}
            # Rounds: every row once, in turn, --live-rounds times; the host's quieter and busier minutes then
            # fall on every row alike (on the VMs of docs/results.md a 30 s row's median moved by 0.1-0.3 ms
            # from one minute to the next).
            live_runs: dict[str, list[dict]] = {name: [] for name in live_rows}
            for _ in range(args.live_rounds):
                for name, run in live_rows.items():
                    live_runs[name].append(run())
            figures["live"] = {name: pooled(rounds) for name, rounds in live_runs.items()}
    print(report(figures))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def report(f: dict) -> str:
    lines = [f"bench_runtime {f['date']}: before = {f['before']}, after = this tree; medians; ratio = before / after; "
             f"load average at start {f.get('load', '?')}", ""]
    if "startup" in f:
        lines += startup_lines(f["startup"])
    if "replay" in f:
        lines += replay_lines(f["replay"])
    if "stages_us_per_window" in f:
        lines += stage_lines(f["stages_us_per_window"])
    if "labels" in f:
        lines += ["", "labels, before vs after (sample_end, label, raw_label of every window; both with "
                  + " ".join(SAME_POSTPROCESSING) + ")"]
        for name, row in f["labels"].items():
            lines.append(f"  {name:<30s} {row['windows']:5d} windows, {row['differing']} differ; largest probability "
                         f"difference {row.get('max_prob_difference', float('nan')):.1e}")
    if "live" in f:
        lines += live_lines(f["live"])
    return "\n".join(lines)


def startup_lines(s: dict) -> list[str]:
    lines: list[str] = []
    numpy_s = s["import numpy"]["after"]["wall_s"]
    lines.append(f"{'start-up':<22s} {'before s':>9s} {'after s':>9s} {'ratio':>6s} {'after/numpy':>11s} "
                 f"{'before MiB':>10s} {'after MiB':>9s}")
    for name, row in s.items():
        b = row.get("before")
        a = row["after"]
        lines.append(f"{name:<22s} {b['wall_s'] if b else float('nan'):9.3f} {a['wall_s']:9.3f} "
                     f"{(b['wall_s'] / a['wall_s']) if b else float('nan'):6.2f} {a['wall_s'] / numpy_s:11.2f} "
                     f"{b['peak_rss_mib'] if b else float('nan'):10.1f} {a['peak_rss_mib']:9.1f}")
    return lines


def replay_lines(replay: dict) -> list[str]:
    lines = ["", f"{'replay (whole command)':<22s} {'before s':>9s} {'after s':>9s} {'before x':>9s} {'after x':>9s} "
                  f"{'before MiB':>10s} {'after MiB':>9s}"]
    for name, row in replay.items():
        b, a = row["before"], row["after"]
        lines.append(f"{name:<22s} {b['wall_s']:9.3f} {a['wall_s']:9.3f} {b['realtime_factor']:9.0f} "
                     f"{a['realtime_factor']:9.0f} {b['peak_rss_mib']:10.1f} {a['peak_rss_mib']:9.1f}")
    m, h = replay["1 minute"]["after"], replay["2 hours"]["after"]
    lines.append(f"  after: 2-hour peak memory / 1-minute peak memory = {h['peak_rss_mib'] / m['peak_rss_mib']:.3f}")
    return lines


# The per-window work around the model's invoke, as the pipeline's stage timers name it (a tree without a stage,
# e.g. one from before the posture rule, counts it as 0).
AROUND_INVOKE = ("frontend", "align", "normalize", "postures", "postprocess")


def stage_lines(stages: dict) -> list[str]:
    lines: list[str] = []
    for precision, row in stages.items():
        b, a = row["before"], row["after"]
        for mode, what in (("frame", "one frame per call, as a serial port delivers"),
                           ("block", "64-sample blocks: the per-window stages alone")):
            lines += ["", f"us per window (64 samples), {what}, tflite {precision}",
                      f"  {'stage':<12s} {'before':>8s} {'after':>8s} {'ratio':>6s}"]
            for stage in [*b[mode], *(s for s in a[mode] if s not in b[mode])]:  # the after tree's new stages last
                before, after = b[mode].get(stage), a[mode].get(stage, 0.0)
                if before is None:
                    lines.append(f"  {stage:<12s} {'-':>8s} {after:8.1f} {'-':>6s}")
                elif before or after:
                    lines.append(f"  {stage:<12s} {before:8.1f} {after:8.1f} {before / max(after, 1e-9):6.1f}")

        def around(tree: dict) -> float:
            blk = tree["block"]
            return sum(blk.get(stage, 0.0) for stage in AROUND_INVOKE) + tree["predict"] - tree["invoke_only"]
        lines.append(f"  after, around the invoke per window: {' + '.join(AROUND_INVOKE)} + predict's wrapper "
                     f"({a['predict'] - a['invoke_only']:.1f}) = {around(a):.1f} us, with the gap "
                     f"check {around(a) + a['block']['gaps']:.1f} us; invoke alone {a['invoke_only']:.1f} us (before: "
                     f"{around(b):.1f} us, with the gap check {around(b) + b['block']['gaps']:.1f} us)")
    return lines


def live_lines(live: dict) -> list[str]:
    width = max(21, *(len(name) for name in live))
    lines = ["", "live `har-edge run` on the virtual device at 50 Hz; latency: the device's write of a window's last "
                 "sample -> its label line read from the pipe (and the runtime's own latency_ms: bytes read -> result)",
             f"  {'':<{width}s} {'CPU us/sample':>13s} {'median ms':>9s} {'p99 ms':>7s} {'own median':>10s} "
             f"{'own p99':>7s} {'peak MiB':>8s} {'windows':>7s}"]
    for name, row in live.items():
        lines.append(f"  {name:<{width}s} {row['cpu_us_per_sample']:13.1f} {row.get('device_to_line_median_ms') or 0:9.3f} "
                     f"{row.get('device_to_line_p99_ms') or 0:7.3f} {row['latency_median_ms'] or 0:10.3f} "
                     f"{row['latency_p99_ms'] or 0:7.3f} {row['peak_rss_mib']:8.1f} {row['windows']:7d}")
    b, a = live["before int8"], live["after int8"]
    lines.append(f"  CPU per sample before / after (int8): {b['cpu_us_per_sample'] / a['cpu_us_per_sample']:.2f}x")
    return lines


if __name__ == "__main__":
    sys.exit(main())
