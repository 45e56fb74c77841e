"""`har-edge`: live recognition from the IMU board, replay of recordings, recording, benchmarks.

    har-edge run --port /dev/ttyACM0 [--baud 115200] [--text]
    har-edge replay RECORDING [--realtime] [--plot FILE.png]
    har-edge record --port /dev/ttyACM0 --out FILE.csv|FILE.bin
    har-edge bench [--json] [--torch-checkpoint PATH]
    har-edge demo [--speed 10] [--faults]

Every command takes --bundle DIR, --backend tflite|onnx, --precision int8|fp32 and --jsonl PATH
(`-` for stdout). Problems the user can fix print one line `har-edge: error: ...` and exit 2;
Ctrl-C (or SIGTERM from systemd) flushes the outputs, prints the counters and exits 0.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from edge.runtime import DEFAULT_BUNDLE
from edge.postprocess import SmoothingConfig

EXIT_USAGE = 2


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and output")
    g.add_argument("--bundle", default=str(DEFAULT_BUNDLE), metavar="DIR",
                   help="model bundle directory written by har-export (default: the model shipped with the package)")
    g.add_argument("--backend", choices=("tflite", "onnx"), default="tflite",
                   help="inference runtime: tflite (ai_edge_litert / tflite_runtime) or onnx (onnxruntime); default tflite")
    g.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="model precision (default int8)")
    g.add_argument("--threads", type=_positive_int, default=1, help="inference threads (default 1)")
    g.add_argument("--jsonl", metavar="PATH", help="write one JSON object per window to PATH ('-' = stdout)")
    g.add_argument("--append", action="store_true", help="append to the --jsonl file instead of replacing it")
    s = p.add_argument_group("post-processing")
    default = SmoothingConfig()
    s.add_argument("--smoothing", choices=("average", "vote", "none"), default=default.method,
                   help="average probabilities or k-of-n vote over recent windows, or none: each window's own "
                        f"label (default {default.method}: measured best, docs/results.md)")
    s.add_argument("--smooth-windows", type=int, default=default.n, metavar="N",
                   help=f"recent windows considered, the current one included (default {default.n})")
    s.add_argument("--votes", type=int, default=default.k, metavar="K",
                   help=f"votes needed with --smoothing vote (default {default.k})")
    s.add_argument("--threshold", type=float, default=default.threshold,
                   help=f"confidence below which the label is 'uncertain' (default {default.threshold:g}; 0 disables)")
    p.add_argument("--mount-calibration", metavar="FILE",
                   help="the wearer's mount calibration (bundles trained with mount alignment): read at start "
                        "when FILE exists, learnt from moving windows otherwise, written back on exit")
    p.add_argument("--quiet", action="store_true", help="no live label lines on the terminal")


def _add_serial(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True, help="serial port of the IMU board, e.g. /dev/ttyACM0 or /dev/har-imu")
    p.add_argument("--baud", type=_positive_int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--text", action="store_true",
                   help="plain CSV-lines mode ('[t_ms,]ax,ay,az,gx,gy,gz' per line) instead of binary frames")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                   help="give up when the port has not opened within S seconds (default: keep trying)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--report-every", type=float, default=10.0, metavar="S",
                   help="print the fault counters every S seconds (default 10; 0 = only on exit)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="har-edge", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="live recognition from the serial port")
    _add_serial(run)
    _add_common(run)

    replay = sub.add_parser("replay", help="the same pipeline over a recording")
    replay.add_argument("recording", help="recording CSV, raw serial capture (.bin) or HAPT acc_expNN_userMM.txt")
    replay.add_argument("--realtime", action="store_true", help="pace the samples at the recording's rate")
    replay.add_argument("--plot", metavar="FILE.png", help="draw the label timeline (with the true labels when known)")
    replay.add_argument("--summary-json", metavar="PATH", help="write counters, throughput and accuracy as JSON")
    _add_common(replay)

    record = sub.add_parser("record", help="save a live stream for later replay (and show labels)")
    _add_serial(record)
    record.add_argument("--out", required=True, metavar="FILE",
                        help="FILE.csv (decoded samples, the project's recording CSV) or FILE.bin (raw serial bytes)")
    record.add_argument("--no-model", action="store_true", help="only record; do not run the recognizer")
    _add_common(record)

    bench = sub.add_parser("bench", help="latency and throughput figures")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    bench.add_argument("--recording", help="recording to replay and to stream (default: a HAPT experiment from "
                                           "the shared data, $HAR_SHARED_DATA)")
    bench.add_argument("--torch-checkpoint", metavar="PATH",
                       help="training checkpoint for the torch eager fp32 baseline (needs torch; skipped otherwise)")
    bench.add_argument("--windows", type=_positive_int, default=500, help="windows timed per engine (default 500)")
    bench.add_argument("--e2e-seconds", type=float, default=60.0,
                       help="seconds of live streaming at 50 Hz through the virtual device (default 60; 0 skips)")
    _add_common(bench)

    from edge.demo import add_demo_arguments

    demo = sub.add_parser("demo", help="the shipped model on the example recording, streamed live through a "
                                       "virtual serial device, with a closing summary")
    add_demo_arguments(demo)
    _add_common(demo)
    return parser


# -- helpers --------------------------------------------------------------------------------------

def _smoothing(args):
    return SmoothingConfig(args.smoothing, n=args.smooth_windows, k=args.votes, threshold=args.threshold)


def _sinks(args, rate_hz: float, live: bool):
    from edge.sinks import JsonlSink, TerminalSink

    sinks = []
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl, flush_every=1 if live else 256, append=args.append))
    if not args.quiet:
        # JSON on stdout keeps stdout machine-readable: the human line goes to stderr then.
        stream = sys.stderr if args.jsonl == "-" else sys.stdout
        sinks.append(TerminalSink(stream, rate_hz=rate_hz))
    return sinks


def _say(message: str) -> None:
    print(f"har-edge: {message}", file=sys.stderr, flush=True)


def _stop_signals_as_interrupt() -> None:
    """systemd stops the service with SIGTERM: handle it like Ctrl-C (flush, counters, exit 0).
    SIGINT gets Python's handler back explicitly: a process started in the background by a
    non-interactive shell (`cmd &` in a script, some CI runners) inherits SIGINT *ignored*, and Python
    then installs no KeyboardInterrupt handler, so Ctrl-C / `kill -INT` would be silently dropped."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _decoder(args):
    from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder

    return CsvLineDecoder() if args.text else FrameDecoder()


def _stopper(duration: float | None):
    if duration is None:
        return None
    deadline = time.perf_counter() + duration
    return lambda: time.perf_counter() >= deadline


def _calibration(args, model):
    """The saved mount calibration of --mount-calibration FILE, or None (learn it from the stream)."""
    from edge.mount import MountCalibration, MountError

    path = getattr(args, "mount_calibration", None)
    if not path:
        return None
    if model.mount is None:
        _say(f"warning: {model.description} was trained without mount alignment; --mount-calibration is not used")
        return None
    path = Path(path)
    if not path.exists():
        _say(f"{path} does not exist yet: the mount is calibrated from this stream's moving windows and saved there")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return MountCalibration.from_dict(model.mount, data if isinstance(data, dict) else {}, str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CliError(f"{path} is not a mount calibration JSON file ({exc}); delete it to calibrate afresh") from None
    except MountError as exc:
        raise CliError(str(exc)) from None


def _save_calibration(args, pipeline) -> None:
    path = getattr(args, "mount_calibration", None)
    if not path or pipeline.calibration is None:
        return
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(pipeline.calibration.to_dict(), indent=2) + "\n")
        tmp.replace(path)
    except OSError as exc:
        _say(f"warning: could not save the mount calibration to {path}: {exc}")
        return
    state = "calibrated" if pipeline.calibration.calibrated else "not yet calibrated"
    _say(f"mount calibration ({state}, {pipeline.calibration.windows} moving windows) saved to {path}")


# -- commands -------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from edge.runtime import Pipeline, load_model, run_loop
    from edge.sources import SerialSource

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    smoothing = _smoothing(args)
    sinks = _sinks(args, model.frontend_config.sample_rate_hz, live=True)
    pipeline = Pipeline(model, smoothing, decoder=_decoder(args), calibration=_calibration(args, model))
    pipeline.warm_up()
    _say(f"model {model.description}; smoothing {smoothing.method} over {smoothing.n}, threshold {smoothing.threshold}")
    source = SerialSource(args.port, args.baud, connect_timeout_s=args.connect_timeout)
    _stop_signals_as_interrupt()
    run_loop(source, pipeline, sinks, report_every_s=args.report_every or None, stop=_stopper(args.duration))
    _save_calibration(args, pipeline)
    return 0


def cmd_replay(args) -> int:
    from firmware_bridge.recording import read_recording

    from edge.runtime import Pipeline, format_counters, load_model, run_loop, truth_summary
    from edge.sinks import MemorySink
    from edge.sources import RecordingSource

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    t_load = time.perf_counter()
    recording = read_recording(args.recording)
    load_s = time.perf_counter() - t_load
    rate = model.frontend_config.sample_rate_hz
    if abs(recording.rate_hz - rate) > 0.02 * rate:
        _say(f"warning: {args.recording} was sampled at {recording.rate_hz:.2f} Hz; the model expects {rate:g} Hz")
    memory = MemorySink()
    sinks = [memory] + _sinks(args, rate, live=args.realtime)
    pipeline = Pipeline(model, _smoothing(args), notify=_say, calibration=_calibration(args, model))
    source = RecordingSource(recording.samples, realtime=args.realtime, rate_hz=rate)
    _stop_signals_as_interrupt()
    started = time.perf_counter()
    report = run_loop(source, pipeline, sinks, report_every_s=10.0 if args.realtime else None, report=lambda m: None)
    _save_calibration(args, pipeline)
    elapsed = time.perf_counter() - started
    counters = report.counters
    n = len(recording)
    summary = {
        "recording": str(args.recording),
        "model": model.description,
        "samples": n,
        "windows": len(memory.results),
        "pipeline_seconds": elapsed,
        "load_seconds": load_s,
        "realtime_factor": (n / rate) / elapsed if elapsed > 0 else None,
        "counters": counters,
    }
    if recording.labels is not None:
        summary["truth"] = truth_summary(memory.results, recording.labels, model.frontend_config.window)
    _say(("interrupted; " if report.interrupted else "") + "counters: " + format_counters(counters))
    line = f"{len(memory.results)} windows from {n} samples ({n / rate:.0f} s) in {elapsed:.2f} s"
    if summary["realtime_factor"] and not args.realtime:
        line += f" = {summary['realtime_factor']:.0f}x real time (+{load_s:.2f} s reading the file)"
    _say(line)
    truth = summary.get("truth")
    if truth and truth["scored_windows"]:
        _say(f"against the true labels ({truth['scored_windows']} windows inside one labelled activity): "
             f"raw {100 * truth['raw_accuracy']:.1f}%, smoothed {100 * truth['smoothed_accuracy']:.1f}% "
             f"({truth['uncertain']} uncertain)")
    if args.plot:
        from edge.plot import plot_timeline

        plot_timeline(memory.results, args.plot, model.classes, recording.labels, rate_hz=rate,
                      title=f"{Path(args.recording).name} - {model.description}")
        _say(f"wrote {args.plot}")
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


def cmd_record(args) -> int:
    from firmware_bridge.recording import write_recording_csv

    from edge.runtime import Pipeline, format_counters, load_model, run_loop
    from edge.sources import ByteChunk, SerialSource

    out = Path(args.out)
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".bin"):
        raise CliError(f"--out {out}: use a .csv (decoded samples) or .bin (raw serial bytes) file name")
    if args.text and suffix == ".bin":
        raise CliError("--text with a .bin capture: a .bin recording holds binary frames; record text mode to .csv")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        raw_file = open(out, "wb") if suffix == ".bin" else None
        if raw_file is None:
            out.touch()
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror}; choose a writable path for --out") from None
    samples: list = []

    class Tee:
        """Passes items on, keeping what the recording needs (raw bytes or decoded samples)."""

        def __init__(self, source, decoder):
            self.source, self.decoder = source, decoder

        def __iter__(self):
            for item in self.source:
                if isinstance(item, ByteChunk):
                    if raw_file is not None:
                        raw_file.write(item.data)
                    else:
                        samples.extend(f for f in self.decoder.feed(item.data) if hasattr(f, "seq"))
                yield item

        def close(self):
            self.source.close()

    source = SerialSource(args.port, args.baud, connect_timeout_s=args.connect_timeout)
    tee = Tee(source, _decoder(args))
    _stop_signals_as_interrupt()
    try:
        if args.no_model:
            interrupted = False
            stop = _stopper(args.duration)
            try:
                for _ in tee:
                    if stop is not None and stop():
                        break
            except KeyboardInterrupt:
                interrupted = True
            finally:
                tee.close()
            _say(("interrupted; " if interrupted else "") + f"read {source.bytes_read} bytes, "
                 f"reconnects {source.reconnects}")
        else:
            model = load_model(args.bundle, args.backend, args.precision, args.threads)
            pipeline = Pipeline(model, _smoothing(args), decoder=_decoder(args),
                                calibration=_calibration(args, model))
            pipeline.warm_up()
            run_loop(tee, pipeline, _sinks(args, model.frontend_config.sample_rate_hz, live=True),
                     report_every_s=args.report_every or None, stop=_stopper(args.duration))
            _save_calibration(args, pipeline)
    finally:
        if raw_file is not None:
            raw_file.close()
        else:
            if samples:
                write_recording_csv(out, samples)
    _say(f"saved {out} ({len(samples)} samples)" if raw_file is None else f"saved {out} ({out.stat().st_size} bytes)")
    if raw_file is None and not samples:
        _say(f"warning: no samples arrived; {out} is empty")
    return 0


def cmd_bench(args) -> int:
    from edge.bench import format_table, run_bench

    figures = run_bench(args, progress=_say)
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


def cmd_demo(args) -> int:
    from edge.demo import print_summary, run_demo

    _stop_signals_as_interrupt()
    summary = run_demo(args, _smoothing(args), lambda rate: _sinks(args, rate, live=True))
    print_summary(summary)
    if args.summary_json:
        Path(args.summary_json).write_text(json.dumps(summary, indent=2) + "\n")
    return 0


class CliError(ValueError):
    """A bad combination of options."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one line, exit 2, no traceback."""
    from edge.frontend import FrontEndError
    from edge.postprocess import SmoothingConfigError
    from edge.runtime import EdgeError
    from edge.sinks import SinkError
    from edge.sources import SourceError

    errors: list[type[BaseException]] = [CliError, EdgeError, SinkError, SourceError, SmoothingConfigError, FrontEndError]
    for module, name in (("edge.bundle", "BundleError"), ("edge.inference", "InferenceError"),
                         ("firmware_bridge.recording", "RecordingError"), ("edge.bench", "BenchError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "record": cmd_record, "bench": cmd_bench, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = _user_errors()
    try:
        return COMMANDS[args.command](args)
    except errors as exc:
        print(f"har-edge {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C while loading, before the loop took over
        _say("interrupted")
        return 0
    except BrokenPipeError:  # `har-edge ... --jsonl - | head`
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
