"""The quick-start demo: the shipped model recognizes the example recording as a live stream.

    har-edge demo [--speed 10] [--recording FILE] [--faults] [--bundle DIR] [--backend tflite|onnx]

A virtual IMU device (`firmware_bridge.simulate.VirtualDevice`) plays the recording as protocol
frames on a pseudo-terminal; the live runtime reads that port exactly as it reads a real board
(serial source -> decoder -> gaps -> front-end -> window -> normalize -> infer -> smooth -> emit),
prints a line each time the label changes, and closes with a summary: label counts, accuracy against the true labels,
latency percentiles and the fault counters.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.paths import EXAMPLE_RECORDING

if TYPE_CHECKING:
    from edge.postprocess import SmoothingConfig


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The demo's own options; --bundle, --backend, --precision, smoothing and --quiet come from har-edge."""
    p.add_argument("--recording", default=str(EXAMPLE_RECORDING),
                   help="recording to stream (default: the shipped example, 4.7 min of HAPT user 1)")
    p.add_argument("--speed", type=float, default=10.0, help="times real time (default 10; 1 = 50 Hz real time)")
    p.add_argument("--faults", action="store_true",
                   help="inject dropped, corrupted and duplicated frames and garbage bytes on the line")
    p.add_argument("--summary-json", metavar="PATH", help="also write the summary as JSON")


def run_demo(args: argparse.Namespace, smoothing: SmoothingConfig, make_sinks: Callable[[float], list[Any]]) -> dict[str, Any]:
    """Stream args.recording through a virtual device into the live runtime; returns the summary."""
    # Imported here: `har-edge --help` builds this command's options without loading numpy.
    import numpy as np

    from firmware_bridge.recording import read_recording
    from firmware_bridge.simulate import Faults, VirtualDevice

    from edge.loop import run_loop
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.scoring import truth_summary
    from edge.sinks import MemorySink
    from edge.sources import SerialSource
    from edge.timing import stats_ms

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    recording = read_recording(args.recording)
    faults = Faults.flaky_cable() if args.faults else Faults()
    memory = MemorySink()
    sinks = [memory] + make_sinks(model.frontend_config.sample_rate_hz)  # terminal lines, --jsonl
    profile = None
    if getattr(args, "profile", None):  # --profile FILE: the wearer's profile from `har-edge enroll`
        from edge.enroll import load_profile

        profile = load_profile(args.profile, model)
    pipeline = Pipeline(model, smoothing, profile=profile, posture_rule=not getattr(args, "no_posture_rule", False))
    pipeline.warm_up()
    seconds = len(recording) / recording.rate_hz / args.speed
    print(f"demo: {Path(args.recording).name}: {len(recording)} samples ({len(recording) / recording.rate_hz:.0f} s "
          f"of motion) played at {args.speed:g}x through a virtual serial device, about {seconds:.0f} s; "
          f"model {model.description}", flush=True)
    with VirtualDevice(recording, faults, speed=args.speed) as device:
        port = device.port
        print(f"demo: virtual IMU on {port}" + (f", injecting faults {faults.active()}" if faults.active() else ""), flush=True)
        finished_at: list[float] = []

        def stop() -> bool:  # the device has played everything and the line has been quiet a moment
            if device.finished and not finished_at:
                finished_at.append(time.monotonic())
            return bool(finished_at) and time.monotonic() - finished_at[0] > 0.5

        assert port is not None  # started: the pty exists
        source = SerialSource(port, 115200, connect_timeout_s=10.0)
        report = run_loop(source, pipeline, sinks, report_every_s=None, report=lambda m: None, stop=stop)
        injected = device.injected.as_dict()
    results = memory.results
    latencies = np.array([r["latency_ms"] for r in results if r.get("latency_ms") is not None])
    summary = {
        "recording": str(args.recording),
        "speed": args.speed,
        "model": model.description,
        "windows": len(results),
        "labels": dict(Counter(r["label"] for r in results).most_common()),
        "truth": truth_summary(results, recording.labels, model.frontend_config.window, classes=model.classes)
                  if recording.labels else None,
        "latency": stats_ms(latencies / 1e3) if len(latencies) else None,
        "counters": report.counters,
        "injected": injected,
        "interrupted": report.interrupted,
    }
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    from edge.loop import format_counters

    print("\n== summary ==")
    print(f"windows: {summary['windows']}   labels: " + ", ".join(f"{k} {v}" for k, v in summary["labels"].items()))
    truth = summary.get("truth")
    if truth and truth.get("scored_windows"):
        print(f"accuracy against the true labels ({truth['scored_windows']} windows inside one activity): "
              f"per window {100 * truth['raw_accuracy']:.1f}%, after smoothing {100 * truth['smoothed_accuracy']:.1f}% "
              f"({truth['uncertain']} uncertain)")
    lat = summary.get("latency")
    if lat:
        print(f"latency from a window's last sample arriving to its label: p50 {lat['median_ms']:.2f} ms, "
              f"p90 {lat['p90_ms']:.2f} ms, p99 {lat['p99_ms']:.2f} ms, max {lat['max_ms']:.2f} ms")
    print("counters: " + format_counters(summary["counters"]))
    if any(summary["injected"].values()):
        print("faults injected by the virtual device: " + ", ".join(f"{k} {v}" for k, v in summary["injected"].items() if v))
