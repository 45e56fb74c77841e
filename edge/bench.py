"""`har-edge bench`: latency and throughput of the edge runtime, measured, side by side, in one run.

1. Per-window inference, batch 1, one thread: median and p99 for every backend x precision in the
   bundle (tflite int8/fp32, onnx int8/fp32). The torch eager baseline of the same model is
   `scripts/bench_torch.py` (it runs this benchmark and torch side by side): the edge package never
   imports torch or training.
2. Per-stage costs of the live path (one frame per read, like a serial port): decode, gap
   handling, front-end, normalization, inference, post-processing, whole pipeline.
3. Replay throughput: a whole recording through the pipeline, as a multiple of real time.
4. End to end: `har-edge run` in its own process reading the virtual serial device (a pty) at
   50 Hz; latency from the arrival of a window's last sample to its label (the `latency_ms` of
   each JSON line) and the resident memory of that process.

Figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from firmware_bridge.recording import HAPT_ARCHIVE, Recording, data_root

from edge.frontend import FrontEnd
from edge.model import Model, load_model
from edge.paths import EXAMPLE_RECORDING
from edge.pipeline import Pipeline, StageTimers
from edge.timing import stats_ms

ENGINES = (("tflite", "int8"), ("tflite", "fp32"), ("onnx", "int8"), ("onnx", "fp32"))
REPO = Path(__file__).resolve().parent.parent


class BenchError(ValueError):
    """The benchmark cannot run (no recording, no model); the message says what to give it."""


def default_recording(workdir: Path) -> Path:
    """The example shipped with the package (HAPT user 1, labelled), else HAPT experiment 1 of
    user 1 from the shared data, extracted to workdir."""
    if EXAMPLE_RECORDING.exists():
        return EXAMPLE_RECORDING
    archive = data_root() / HAPT_ARCHIVE
    if not archive.exists():
        raise BenchError(f"no --recording given, {EXAMPLE_RECORDING} is missing and {archive} is not there; "
                         "pass --recording FILE (a recording CSV, a .bin capture or a HAPT acc_expNN_userMM.txt)")
    wanted = ("acc_exp01_user01.txt", "gyro_exp01_user01.txt", "labels.txt")
    with zipfile.ZipFile(archive) as z:
        for member in z.namelist():
            if Path(member).name in wanted:
                (workdir / Path(member).name).write_bytes(z.read(member))
    return workdir / wanted[0]


def real_windows(raw: np.ndarray, model: Model, count: int) -> np.ndarray:
    """The recording's own normalized windows, (count, 128, 9) float32 (repeated if short)."""
    windows, _ = FrontEnd(model.frontend_config).push(raw)  # (k, 128, 9)
    x = ((windows - model.mean) / model.std).astype(np.float32)
    if len(x) == 0:
        raise BenchError("the recording is shorter than one window (128 samples); give a longer one")
    repeated: np.ndarray = x[np.arange(count) % len(x)]
    return repeated


def time_per_window(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray, warmup: int = 20) -> list[float]:
    for i in range(min(warmup, len(x))):
        predict(x[i:i + 1])
    times: list[float] = []
    for i in range(len(x)):
        t0 = time.perf_counter()
        predict(x[i:i + 1])  # (1, 128, 9) -> (1, 6)
        times.append(time.perf_counter() - t0)
    return times


def inference_table(args: argparse.Namespace, x: np.ndarray, progress: Callable[[str], None]) -> dict[str, Any]:
    rows = {}
    for backend, precision in ENGINES:
        key = f"{backend}-{precision}"
        try:
            model = load_model(args.bundle, backend, precision, args.threads)
        except ValueError as exc:  # BundleError / InferenceError: not in this bundle or no runtime
            rows[key] = {"skipped": str(exc)}
            continue
        progress(f"timing {key} on {len(x)} windows")
        session = model.session
        rows[key] = {"engine": getattr(session, "describe", lambda key=key: key)(), **stats_ms(time_per_window(session.predict, x))}
    return rows


def stage_costs(model: Model, recording: Recording, samples: int) -> dict[str, Any]:
    """The live path, one frame per read: per-stage cost per sample and per window."""
    from firmware_bridge.protocol import FrameDecoder, encode_sample

    from edge.sources import ByteChunk

    chosen = recording.samples[:samples]
    frames = [encode_sample(s) for s in chosen]
    pipeline = Pipeline(model, decoder=FrameDecoder(), notify=lambda m: None)
    for frame in frames:
        pipeline.process(ByteChunk(frame, time.perf_counter()))
    t = pipeline.timers
    n_samples, n_windows = len(frames), max(1, pipeline.windows)
    out: dict[str, Any] = {"samples": n_samples, "windows": pipeline.windows}
    for stage in t.STAGES:
        seconds = t.seconds[stage]
        out[stage] = {"us_per_sample": 1e6 * seconds / n_samples, "us_per_window": 1e6 * seconds / n_windows}
    return out


def replay_throughput(model: Model, recording: Recording) -> dict[str, Any]:
    from edge.sources import RecordingSource

    rate = model.frontend_config.sample_rate_hz
    source = RecordingSource(recording.samples, rate_hz=rate)
    pipeline = Pipeline(model, notify=lambda m: None)
    t0 = time.perf_counter()
    windows = sum(len(pipeline.process(block)) for block in source)
    elapsed = time.perf_counter() - t0
    n = len(source)
    return {"samples": n, "windows": windows, "stream_seconds": n / rate, "seconds": elapsed,
            "realtime_factor": (n / rate) / elapsed}


def _rss_kib(pid: int) -> dict[str, Any]:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    return {line.split(":")[0]: int(line.split()[1]) for line in text.splitlines() if line.startswith(("VmRSS", "VmHWM"))}


def end_to_end(args: argparse.Namespace, recording_path: Path, seconds: float,
               progress: Callable[[str], None]) -> dict[str, Any]:
    """`har-edge run` in a subprocess on the virtual device at 50 Hz (real time)."""
    from firmware_bridge.simulate import VirtualDevice

    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "har-imu"
        device = VirtualDevice(recording_path, speed=1.0, link=link, loop=True)
        device.start()
        command = [sys.executable, "-m", "edge.cli", "run", "--port", str(link), "--jsonl", "-", "--quiet",
                   "--bundle", str(args.bundle), "--backend", args.backend, "--precision", args.precision,
                   "--threads", str(args.threads), "--duration", str(seconds), "--report-every", "0"]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        progress(f"streaming {seconds:g} s at 50 Hz through {link} into `har-edge run` ({args.backend} {args.precision})")
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stdout is not None and proc.stderr is not None  # both PIPE
        out_lines, err_lines = proc.stdout, proc.stderr
        memory: dict[str, Any] = {}
        stderr: list[str] = []
        drain = threading.Thread(target=lambda: stderr.extend(err_lines), daemon=True)
        drain.start()
        latencies: list[float] = []
        try:
            for line in out_lines:
                result = json.loads(line)
                if "type" in result:  # a status line (docs/edge.md, "Status events"), not a window
                    continue
                latencies.append(result["latency_ms"] / 1e3)
                memory = _rss_kib(proc.pid) or memory
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            device.stop()
        drain.join(timeout=5)
    if proc.returncode != 0 or not latencies:
        raise BenchError(f"`{' '.join(command)}` ended with status {proc.returncode} after {len(latencies)} windows: "
                         + "".join(stderr)[-1500:])
    return {"seconds": seconds, "windows": len(latencies), **stats_ms(latencies),
            "rss_mib": memory.get("VmRSS", 0) / 1024, "peak_rss_mib": memory.get("VmHWM", 0) / 1024,
            "engine": f"{args.backend}-{args.precision}"}


def run_bench(args: argparse.Namespace, progress: Callable[[str], None] = print,
              extra_engines: Callable[[np.ndarray, dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """All figures; `extra_engines(windows (n, 128, 9), inference rows) -> dict` adds rows timed in the same run."""
    from firmware_bridge.recording import read_recording

    with tempfile.TemporaryDirectory() as tmp:
        recording_path = Path(args.recording) if args.recording else default_recording(Path(tmp))
        recording = read_recording(recording_path)
        model = load_model(args.bundle, args.backend, args.precision, args.threads)
        raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
        raw = raw[np.isfinite(raw).all(axis=1)]
        x = real_windows(raw, model, args.windows)  # (windows, 128, 9)
        figures: dict[str, Any] = {
            "machine": {"platform": platform.platform(), "python": platform.python_version(),
                        "cpus": os.cpu_count(), "threads": args.threads},
            "bundle": str(args.bundle),
            "recording": str(recording_path if args.recording or recording_path == EXAMPLE_RECORDING
                             else "HAPT acc_exp01_user01.txt (shared data)"),
            "inference": inference_table(args, x, progress),
        }
        if extra_engines is not None:  # scripts/bench_torch.py: the torch baseline, on the same windows
            figures.update(extra_engines(x, figures["inference"]))
        progress("per-stage costs of the live path (one frame per read)")
        figures["stages"] = stage_costs(model, recording, min(len(recording.samples), 6400))
        progress("replay throughput")
        figures["replay"] = replay_throughput(model, recording)
        figures["replay"]["engine"] = f"{args.backend}-{args.precision}"
        if args.e2e_seconds > 0:
            figures["end_to_end"] = end_to_end(args, recording_path, args.e2e_seconds, progress)
    return figures


def format_table(f: dict[str, Any]) -> str:
    lines = [f"har-edge bench  ({f['machine']['platform']}, Python {f['machine']['python']}, "
             f"{f['machine']['cpus']} CPUs, {f['machine']['threads']} inference thread)",
             f"bundle {f['bundle']}; recording {f['recording']}", "",
             "per-window inference, batch 1"]
    lines.append(f"  {'engine':<14s} {'median ms':>10s} {'p99 ms':>9s} {'vs torch':>9s}")
    rows = dict(f["inference"])
    for key, row in rows.items():
        if "skipped" in row:
            lines.append(f"  {key:<14s} skipped: {row['skipped'][:100]}")
            continue
        speed = f.get("speedup_vs_torch", {}).get(key)
        lines.append(f"  {key:<14s} {row['median_ms']:10.3f} {row['p99_ms']:9.3f} "
                     + (f"{speed:8.1f}x" if speed else f"{'-':>9s}"))
    t = f.get("torch")
    if t and "median_ms" in t:
        lines.append(f"  {'torch-fp32':<14s} {t['median_ms']:10.3f} {t['p99_ms']:9.3f} {'1.0x':>9s}  ({t['engine']})")
    elif t:
        lines.append(f"  {'torch-fp32':<14s} skipped: {t['skipped']}")
    s = f["stages"]
    lines += ["", f"per-stage cost, live path ({s['samples']} samples one frame per read, {s['windows']} windows)",
              f"  {'stage':<12s} {'us/sample':>10s} {'us/window':>10s}"]
    for stage in StageTimers.STAGES:
        lines.append(f"  {stage:<12s} {s[stage]['us_per_sample']:10.2f} {s[stage]['us_per_window']:10.1f}")
    r = f["replay"]
    lines += ["", f"replay ({r['engine']}): {r['samples']} samples ({r['stream_seconds']:.0f} s of stream), "
                  f"{r['windows']} windows in {r['seconds']:.3f} s = {r['realtime_factor']:.0f}x real time"]
    e = f.get("end_to_end")
    if e:
        lines += ["", f"end to end through the virtual serial device at 50 Hz ({e['engine']}, {e['seconds']:g} s, "
                      f"{e['windows']} windows): last sample arrival -> label",
                  f"  median {e['median_ms']:.3f} ms, p90 {e['p90_ms']:.3f} ms, p99 {e['p99_ms']:.3f} ms, "
                  f"max {e['max_ms']:.3f} ms (slowest {e['slowest_ms']}); "
                  f"edge process resident memory {e['rss_mib']:.1f} MiB (peak {e['peak_rss_mib']:.1f} MiB)"]
    return "\n".join(lines)
