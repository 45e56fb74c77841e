"""`har-edge`: live recognition from the IMU board, replay of recordings, recording, benchmarks.

    har-edge run --port /dev/ttyACM0 [--baud 115200] [--text]
    har-edge replay RECORDING [--realtime] [--plot FILE.png]
    har-edge record --port /dev/ttyACM0 --out FILE.csv|FILE.bin [--label NAME]
    har-edge label RECORDING SEGMENTS.csv --out FILE.csv [--unit samples|seconds] [--plot FILE.png]
    har-edge bench [--json]            (the torch baseline: scripts/bench_torch.py)
    har-edge demo [--speed 10] [--faults]
    har-edge enroll --port /dev/ttyACM0 --profile alice.json   # guided: stand, sit, lie down, walk
    har-edge enroll --recording FILE --profile alice.json      # from a recording with labels
    har-edge monitor --mqtt mqtt://broker [--web 127.0.0.1:8080]
    har-edge ports
    har-edge --version

run, replay, record and demo take --profile FILE: the wearer's profile from `enroll` (docs/enrolment.md).

run, replay and record also publish to MQTT (--mqtt URL --device-id ID) and serve a live page
(--web HOST:PORT): docs/mqtt.md.

Every command takes --bundle DIR, --backend tflite|onnx, --precision auto|int8|fp32 and --jsonl PATH
(`-` for stdout). Problems the user can fix print one line `har-edge: error: ...` and exit 2, and
every option and output path is checked before any work starts (`validate_options`); Ctrl-C (or
SIGTERM from systemd) flushes the outputs, prints the counters and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

# Only the standard library at import time: `har-edge --help` and `--version` answer without loading
# numpy; each command imports what it runs.
from edge.messages import say as _say  # standard library only
from edge.paths import DEFAULT_BUNDLE
from edge.postprocess import SmoothingConfig, SmoothingConfigError  # standard library only at import time

if TYPE_CHECKING:  # the commands import what they need when they run (a fast --help)
    from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder

    from edge.enroll import Profile
    from edge.model import Model
    from edge.mount import MountCalibration
    from edge.pipeline import Pipeline
    from edge.sinks import Sink
    from edge.sources import SerialSource

EXIT_USAGE = 2
EXIT_INTERRUPTED = 1  # a command interrupted before it produced what it is for (a guided enrolment)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--bundle", default=str(DEFAULT_BUNDLE), metavar="DIR",
                   help="model bundle directory written by har-export (default: the model shipped with the package)")
    g.add_argument("--backend", choices=("tflite", "onnx"), default="tflite",
                   help="inference runtime: tflite (ai_edge_litert / tflite_runtime) or onnx (onnxruntime); default tflite")
    g.add_argument("--precision", choices=("auto", "int8", "fp32"), default="auto",
                   help="model precision; auto (default): int8 on CPUs with int8 dot-product instructions (Arm "
                        "asimddp, e.g. Pi 5; x86 VNNI), else fp32, where int8 is no faster; the start-up line says "
                        "which and why")
    g.add_argument("--threads", type=_positive_int, default=1, help="inference threads (default 1)")


def _add_common(p: argparse.ArgumentParser) -> None:
    _add_model(p)
    g = p.add_argument_group("output")
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


def _add_publishing(p: argparse.ArgumentParser) -> None:
    from edge.mqtt import add_mqtt_arguments
    from edge.web import add_web_arguments

    add_mqtt_arguments(p)
    add_web_arguments(p)


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="FILE",
                   help="the wearer's profile written by `har-edge enroll` (fitted for this bundle); without it "
                        "the labels are the bundle's own")
    p.add_argument("--no-posture-rule", action="store_true",
                   help="turn off the bundle's session-relative sitting / standing rule (docs/BUNDLE.md, posture)")




def _add_serial(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", required=True,
                   help="serial port of the IMU board, e.g. /dev/ttyACM0 or /dev/har-imu; 'auto' picks the one "
                        "board `har-edge ports` flags as the IMU")
    p.add_argument("--baud", type=_positive_int, default=115200, help="baud rate (default 115200)")
    p.add_argument("--text", action="store_true",
                   help="plain CSV-lines mode ('[t_ms,]ax,ay,az,gx,gy,gz' per line) instead of binary frames")
    p.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                   help="give up when the port has not opened within S seconds (default: keep trying)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--report-every", type=float, default=10.0, metavar="S",
                   help="print the fault counters every S seconds (default 10; 0 = only on exit)")
    p.add_argument("--stall-after", type=float, default=10.0, metavar="S",
                   help="say so when no sample arrived for S seconds on an open port (default 10)")
    p.add_argument("--no-prewarm", action="store_true",
                   help="do not rehearse each window just before its last sample is due (less CPU, labels later "
                        "by a fraction of a millisecond: docs/edge.md)")
    p.add_argument("--mount-save-every", type=float, default=60.0, metavar="S",
                   help="with --mount-calibration: save it every S seconds while it changes, not only on exit "
                        "(default 60: a crash loses at most a minute of what was learnt)")


class _Version(argparse.Action):
    """--version: the installed package's version (looked up only when asked)."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> NoReturn:
        from importlib.metadata import PackageNotFoundError, version

        try:
            text = version("har-edge")
        except PackageNotFoundError:
            text = "unknown (not installed: pip install .)"
        print(f"har-edge {text}")  # stdout, as argparse's own version action does
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="har-edge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("ports", help="list the serial ports with their USB ids and say which looks like the IMU board")

    run = sub.add_parser("run", help="live recognition from the serial port")
    _add_serial(run)
    _add_common(run)
    _add_publishing(run)
    _add_profile(run)

    replay = sub.add_parser("replay", help="the same pipeline over a recording")
    replay.add_argument("recording", help="recording CSV, raw serial capture (.bin) or HAPT acc_expNN_userMM.txt")
    replay.add_argument("--realtime", action="store_true", help="pace the samples at the recording's rate")
    replay.add_argument("--plot", metavar="FILE.png", help="draw the label timeline (with the true labels when known)")
    replay.add_argument("--summary-json", metavar="PATH", help="write counters, throughput and accuracy as JSON")
    _add_common(replay)
    _add_publishing(replay)
    _add_profile(replay)

    record = sub.add_parser("record", help="save a live stream for later replay (and show labels)")
    _add_serial(record)
    record.add_argument("--out", required=True, metavar="FILE",
                        help="FILE.csv (decoded samples, the project's recording CSV) or FILE.bin (raw serial bytes)")
    record.add_argument("--no-model", action="store_true", help="only record; do not run the recognizer")
    record.add_argument("--label", metavar="NAME",
                        help="write NAME in the label column of every sample (.csv only): a recording of one "
                             "activity, ready for a data set (docs/datasets.md)")
    _add_common(record)
    _add_publishing(record)
    _add_profile(record)

    label = sub.add_parser("label", help="label a recording from a segments file (start,end,label), for training")
    label.add_argument("recording", help="recording to label (.csv, .bin or HAPT acc_expNN_userMM.txt)")
    label.add_argument("segments", help="CSV with the header start,end,label: one labelled span per row, start "
                                        "inclusive, end exclusive; samples of no span are unlabelled")
    label.add_argument("--out", required=True, metavar="FILE.csv", help="the labelled recording CSV to write")
    label.add_argument("--unit", choices=("samples", "seconds"), default="samples",
                       help="unit of start/end: samples from 0 (default) or seconds from the first sample")
    label.add_argument("--plot", metavar="FILE.png", help="draw the labelled recording to check it")

    bench = sub.add_parser("bench", help="latency and throughput figures")
    bench.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    bench.add_argument("--recording", help="recording to replay and to stream (default: the shipped example, "
                                           "edge/examples/user01_exp01.csv)")
    bench.add_argument("--windows", type=_positive_int, default=500, help="windows timed per engine (default 500)")
    bench.add_argument("--e2e-seconds", type=float, default=60.0,
                       help="seconds of live streaming at 50 Hz through the virtual device (default 60; 0 skips)")
    _add_model(bench)  # the figures are of one model; no labels are shown or written

    from edge.monitor import add_monitor_arguments

    add_monitor_arguments(sub.add_parser("monitor", help="every wearer's live label from an MQTT broker, in a "
                                                         "terminal table (and a web page with --web)"))

    from edge.demo import add_demo_arguments

    demo = sub.add_parser("demo", help="the shipped model on the example recording, streamed live through a "
                                       "virtual serial device, with a closing summary")
    add_demo_arguments(demo)
    _add_common(demo)
    _add_profile(demo)

    enroll = sub.add_parser("enroll", help="fit the wearer's profile: guided on the live board (--port) or from a "
                                           "labelled recording (--recording)")
    source = enroll.add_mutually_exclusive_group(required=True)
    source.add_argument("--port", help="serial port of the IMU board worn by the wearer: a guided enrolment "
                                       "(stand, sit, lie down, walk; about 2 minutes)")
    source.add_argument("--recording", help="recording with labels: CSV with a label column (class names, empty "
                                            "where unlabelled) or HAPT acc_expNN_userMM.txt with labels.txt beside it")
    enroll.add_argument("--profile", required=True, metavar="FILE",
                        help="the profile to write (JSON, replaced atomically)")
    enroll.add_argument("--step-seconds", type=float, default=20.0, metavar="S",
                        help="guided: seconds recorded per posture (default 20; the walk lasts 1.5x as long)")
    enroll.add_argument("--baud", type=_positive_int, default=115200, help="baud rate (default 115200)")
    enroll.add_argument("--text", action="store_true", help="plain CSV-lines mode instead of binary frames")
    enroll.add_argument("--connect-timeout", type=float, default=None, metavar="S",
                        help="give up when the port has not opened within S seconds (default: keep trying)")
    enroll.add_argument("--mount-calibration", metavar="FILE",
                        help="also write the wearer's mount calibration learnt from the enrolment's walking, for "
                             "`har-edge run --mount-calibration FILE` (the next session starts aligned)")
    _add_model(enroll)
    return parser


# -- option validation: every option and output path, before any work -------------------------------

def _check_output(option: str, path: str | None, suffixes: tuple[str, ...] = ()) -> None:
    """An output file the command will write: a writable file in an existing folder, with a known suffix."""
    from edge.sinks import output_path_problem

    if path is None or path == "-":
        return
    problem = output_path_problem(path)
    if problem:
        raise CliError(f"{option} {path}: {problem}")
    if suffixes and Path(path).suffix.lower() not in suffixes:
        raise CliError(f"{option} {path}: unknown file type {Path(path).suffix or '(none)'!r}; "
                       f"use a name ending in {' or '.join(suffixes)}")


def _check_number(option: str, value: float | None, minimum: float = 0.0, strict: bool = True,
                  unit: str = "seconds") -> None:
    if value is None:
        return
    if not math.isfinite(value) or value < minimum or (strict and value == minimum):
        raise CliError(f"{option} {value:g}: give {unit} {'>' if strict else '>='} {minimum:g}")


def _plot_suffixes() -> tuple[str, ...]:
    from matplotlib.figure import Figure

    return tuple(f".{ext}" for ext in Figure().canvas.get_supported_filetypes())


def validate_options(args: argparse.Namespace) -> None:
    """Every option and output path checked before the model loads or a byte is read: one CliError."""
    _check_number("--speed", getattr(args, "speed", None), unit="times real time")
    _check_number("--duration", getattr(args, "duration", None))
    _check_number("--report-every", getattr(args, "report_every", None), strict=False)  # 0: only on exit
    _check_number("--connect-timeout", getattr(args, "connect_timeout", None), strict=False)
    _check_number("--stall-after", getattr(args, "stall_after", None))
    _check_number("--mount-save-every", getattr(args, "mount_save_every", None))
    _check_number("--e2e-seconds", getattr(args, "e2e_seconds", None), strict=False)
    if hasattr(args, "smoothing"):
        _smoothing(args)  # a CliError naming the bad setting and its flags
        _check_output("--jsonl", args.jsonl)
        if args.mount_calibration:
            _check_output("--mount-calibration", args.mount_calibration, (".json",))
    _check_output("--summary-json", getattr(args, "summary_json", None), (".json",))
    if getattr(args, "plot", None):
        _check_output("--plot", args.plot, _plot_suffixes())
    if args.command == "enroll":
        _check_output("--profile", args.profile, (".json",))
        if args.mount_calibration:
            _check_output("--mount-calibration", args.mount_calibration, (".json",))
    if args.command == "record":
        _check_output("--out", args.out, (".csv", ".bin"))
        if args.text and Path(args.out).suffix.lower() == ".bin":
            raise CliError("--text with a .bin capture: a .bin recording holds binary frames; record text mode to .csv")
        if args.label is not None:
            from firmware_bridge.recording import check_label

            if Path(args.out).suffix.lower() == ".bin":
                raise CliError("--label with a .bin capture: raw bytes have no label column; record to .csv")
            check_label(args.label, "--label")
    if args.command == "label":
        _check_output("--out", args.out, (".csv",))
        if args.plot:
            _check_output("--plot", args.plot, _plot_suffixes())
    if args.command == "bench" and 0 < args.e2e_seconds < BENCH_MIN_E2E_S:
        raise CliError(f"--e2e-seconds {args.e2e_seconds:g}: the live run needs at least {BENCH_MIN_E2E_S:g} s to label "
                       f"a window (the first one is due after 2.56 s of samples); give {BENCH_MIN_E2E_S:g} or more, "
                       "or 0 to skip it")
    if hasattr(args, "device_id") and not args.mqtt:  # the broker's options mean nothing without a broker
        broker_options = [("--mqtt-ca", "mqtt_ca"), ("--mqtt-password-file", "mqtt_password_file"),
                          ("--mqtt-discovery", "mqtt_discovery")]
        if not getattr(args, "web", None):  # the live page names the wearer by --device-id too
            broker_options.insert(0, ("--device-id", "device_id"))
        given = [option for option, name in broker_options if getattr(args, name, None)]
        if given:
            raise CliError(f"{', '.join(given)} without --mqtt URL: {'they set' if len(given) > 1 else 'it sets'} how "
                           "labels are published to a broker; add --mqtt mqtt://HOST, or leave "
                           f"{'them' if len(given) > 1 else 'it'} out")
    if args.command == "monitor":
        _check_output("--stats-json", args.stats_json, (".json",))
        _check_number("--refresh", args.refresh)
    _check_outputs_are_not_inputs(args)


BENCH_MIN_E2E_S = 5.0  # bench's live run: start-up, the port, then 128 samples at 50 Hz before the first label

# The files a command writes (option, attribute) and those it reads: an output that is an input would be
# overwritten while (or before) it is read.
_OUTPUTS = (("--jsonl", "jsonl"), ("--plot", "plot"), ("--summary-json", "summary_json"),
            ("--mount-calibration", "mount_calibration"), ("--out", "out"), ("--stats-json", "stats_json"))
_INPUTS = ("recording", "segments")


def _check_outputs_are_not_inputs(args: argparse.Namespace) -> None:
    inputs = [Path(p) for p in (getattr(args, name, None) for name in _INPUTS) if isinstance(p, str) and p != "-"]
    outputs = [*_OUTPUTS, *((("--profile", "profile"),) if args.command == "enroll" else ())]
    for option, name in outputs:
        value = getattr(args, name, None)
        if not isinstance(value, str) or value == "-":
            continue
        for path in inputs:
            if Path(value).resolve() == path.resolve():
                raise CliError(f"{option} {value} is the file this command reads ({path}); it would be "
                               f"overwritten: give {option} another file")


# -- helpers --------------------------------------------------------------------------------------

def _smoothing(args: argparse.Namespace) -> SmoothingConfig:
    try:
        return SmoothingConfig(args.smoothing, n=args.smooth_windows, k=args.votes, threshold=args.threshold)
    except SmoothingConfigError as exc:  # named by the flags that set it
        raise CliError(f"--smoothing {args.smoothing} --smooth-windows {args.smooth_windows} --votes {args.votes} "
                       f"--threshold {args.threshold:g}: {exc}") from None


def _sinks(args: argparse.Namespace, rate_hz: float, live: bool) -> list[Sink]:
    from edge.sinks import JsonlSink, TerminalSink

    sinks: list[Sink] = []
    if args.jsonl:
        sinks.append(JsonlSink(args.jsonl, flush_every=1 if live else 256, append=args.append))
    if not args.quiet:
        # JSON on stdout keeps stdout machine-readable: the human line goes to stderr then.
        stream = sys.stderr if args.jsonl == "-" else sys.stdout
        sinks.append(TerminalSink(stream, rate_hz=rate_hz))
    from edge.mqtt import mqtt_sink
    from edge.web import web_sink

    sinks += [sink for sink in (mqtt_sink(args, _say), web_sink(args, _say)) if sink is not None]
    return sinks


def _stop_signals_as_interrupt() -> None:
    """SIGTERM and SIGINT stop the command once, then let it save and close (firmware_bridge/stopping.py)."""
    from firmware_bridge.stopping import StopSignals

    StopSignals.install(_say)


def _decoder(args: argparse.Namespace) -> CsvLineDecoder | FrameDecoder:
    from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder

    return CsvLineDecoder() if args.text else FrameDecoder()


def _profile(args: argparse.Namespace, model: Model) -> Profile | None:
    """The wearer profile of --profile FILE for this model, or None (the bundle's own labels)."""
    from edge.enroll import load_profile

    path = getattr(args, "profile", None)
    if not path:
        return None
    profile = load_profile(path, model)
    _say(f"wearer profile {path} ({profile.fit.get('windows', '?')} enrolment windows, "
         f"fitted {profile.fit.get('created', '?')})")
    return profile


def _calibration(args: argparse.Namespace, model: Model) -> MountCalibration | None:
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
        return MountCalibration.load(model.mount, path)
    except MountError as exc:
        raise CliError(str(exc)) from None


def _save_calibration(args: argparse.Namespace, pipeline: Pipeline | None, final: bool = True) -> None:
    path = getattr(args, "mount_calibration", None)
    if not path or pipeline is None or pipeline.calibration is None:
        return
    try:
        pipeline.calibration.save(path)
    except OSError as exc:
        _say(f"warning: could not save the mount calibration to {path}: {exc.strerror or exc}")
        return
    if final:
        state = "calibrated" if pipeline.calibration.calibrated else "not yet calibrated"
        _say(f"mount calibration ({state}, {pipeline.calibration.windows} moving windows) saved to {path}")


def _loop_stop(args: argparse.Namespace, pipeline: Pipeline | None = None) -> Callable[[], bool]:
    """run_loop's stop(): --duration, and on the way the periodic save of a changed mount calibration."""
    deadline = None if getattr(args, "duration", None) is None else time.perf_counter() + args.duration
    saved: dict[str, Any] = {"at": time.perf_counter(), "windows": None}

    def stop() -> bool:
        now = time.perf_counter()
        calibration = None if pipeline is None else pipeline.calibration
        if calibration is not None and now - saved["at"] >= args.mount_save_every:
            saved["at"] = now
            if calibration.windows != saved["windows"]:
                saved["windows"] = calibration.windows
                _save_calibration(args, pipeline, final=False)
        return deadline is not None and now >= deadline

    return stop


def _resolve_port(args: argparse.Namespace) -> None:
    """--port auto: the one port that looks like the IMU board."""
    if getattr(args, "port", None) != "auto":
        return
    from edge.sources import SourceError, find_imu_port

    try:
        args.port = find_imu_port()
    except SourceError as exc:
        raise CliError(str(exc)) from None
    _say(f"--port auto: {args.port}")


# -- commands -------------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from edge.loop import run_loop
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.sources import SerialSource

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    smoothing = _smoothing(args)
    sinks = _sinks(args, model.frontend_config.sample_rate_hz, live=True)
    pipeline = Pipeline(model, smoothing, decoder=_decoder(args), calibration=_calibration(args, model),
                        stall_after_s=args.stall_after, profile=_profile(args, model),
                        posture_rule=not args.no_posture_rule)
    pipeline.warm_up()
    _say(f"model {model.description}; smoothing {smoothing.method} over {smoothing.n}, threshold {smoothing.threshold}")
    source = SerialSource(args.port, args.baud, connect_timeout_s=args.connect_timeout)
    _stop_signals_as_interrupt()
    run_loop(source, pipeline, sinks, report_every_s=args.report_every or None, stop=_loop_stop(args, pipeline),
             prewarm=not args.no_prewarm)
    _save_calibration(args, pipeline)
    _check_port_opened(source, args)
    return 0


def _check_port_opened(source: SerialSource, args: argparse.Namespace) -> None:
    """A run that never got its port open (timed out by --duration, or interrupted) failed, whatever else it
    printed."""
    if source.connects == 0:
        during = f" ({args.duration:g} s)" if getattr(args, "duration", None) else ""
        raise CliError(f"{args.port} never opened during the run{during}; is the board plugged in? "
                       "`har-edge ports` lists the serial ports here")


def cmd_replay(args: argparse.Namespace) -> int:
    from edge.loop import format_counters, run_loop
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.replay import StreamedRecording, WindowLog, paced
    from edge.scoring import truth_summary

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    t_load = time.perf_counter()
    recording = StreamedRecording(args.recording)  # read block by block while the pipeline runs
    load_s = time.perf_counter() - t_load
    rate = model.frontend_config.sample_rate_hz
    if abs(recording.rate_hz - rate) > 0.02 * rate:
        _say(f"warning: {args.recording} was sampled at {recording.rate_hz:.2f} Hz; the model expects {rate:g} Hz")
    _say(f"model {model.description}")
    log = WindowLog()
    sinks = [log] + _sinks(args, rate, live=args.realtime)
    pipeline = Pipeline(model, _smoothing(args), notify=_say, calibration=_calibration(args, model),
                        profile=_profile(args, model), posture_rule=not args.no_posture_rule)
    source = paced(recording, rate) if args.realtime else recording
    _stop_signals_as_interrupt()
    started = time.perf_counter()
    report = run_loop(source, pipeline, sinks, report_every_s=10.0 if args.realtime else None, report=lambda m: None)
    _save_calibration(args, pipeline)
    elapsed = time.perf_counter() - started
    counters = report.counters
    # Interrupted, the file was read ahead of what reached the pipeline (a block at a time): count what reached it.
    n = counters["gaps"]["samples"] if report.interrupted else recording.samples
    summary: dict[str, Any] = {
        "recording": str(args.recording),
        "model": model.description,
        "samples": n,
        "windows": len(log),
        "pipeline_seconds": elapsed,
        "load_seconds": load_s,
        "realtime_factor": (n / rate) / elapsed if elapsed > 0 else None,
        "counters": counters,
    }
    if recording.labels is not None:
        truth = recording.labels.window_truth(log.ends, model.frontend_config.window)  # per window, no per-sample list
        summary["truth"] = truth_summary(log.results(), None, model.frontend_config.window, truth=truth,
                                         classes=model.classes)
    _say(("interrupted; " if report.interrupted else "") + "counters: " + format_counters(counters))
    line = f"{len(log)} windows from {n} samples ({n / rate:.0f} s) in {elapsed:.2f} s"
    if summary["realtime_factor"] and not args.realtime:
        line += f" = {summary['realtime_factor']:.0f}x real time, reading the file included"
    _say(line)
    if n and not len(log):
        _say(f"warning: no window from {n} samples (a window needs {model.frontend_config.window} valid samples in "
             "a row): the counters above say what was dropped (gaps, duplicates, invalid samples)")
    scored = summary.get("truth")
    if scored and scored.get("not_model_classes"):
        others = ", ".join(f"{name} ({n} windows)" for name, n in scored["not_model_classes"].items())
        _say(f"warning: labels that are not classes of this model, not scored: {others}; its classes are "
             f"{', '.join(model.classes)} (check the spelling, or use the bundle trained on them)")
    if scored and scored["scored_windows"]:
        _say(f"against the true labels ({scored['scored_windows']} windows inside one labelled activity): "
             f"raw {100 * scored['raw_accuracy']:.1f}%, smoothed {100 * scored['smoothed_accuracy']:.1f}% "
             f"({scored['uncertain']} uncertain)")
    elif not (scored and scored.get("not_model_classes")):
        note = _unscored_note(args.recording, recording.labels.labelled() if recording.labels is not None else None,
                              model.frontend_config.window)
        if note:
            _say(note)
    if args.plot:
        from edge.plot import plot_timeline

        labels = recording.labels.names() if recording.labels is not None else None  # (n,) names / None
        plot_timeline(list(log.results()), args.plot, model.classes, labels, rate_hz=rate,
                      title=f"{Path(args.recording).name} - {model.description}")
        _say(f"wrote {args.plot}")
    if args.summary_json:
        _write_json(args.summary_json, summary)
    return 0


def _unscored_note(recording: str, labelled: int | None, window: int) -> str | None:
    """Why a recording that could have been scored was not: a replay says so instead of printing no accuracy.
    `labelled`: how many samples carry a label, None for a recording without labels (a CSV without a label
    column is an unlabelled recording, nothing to say; a HAPT experiment without labels.txt is one the user
    may have meant to score)."""
    hapt = Path(recording).name.startswith("acc_exp")
    if labelled is None:
        return f"note: {recording}: no labels.txt beside it, so nothing was scored" if hapt else None
    if labelled == 0:
        where = "labels.txt beside it has no row for this experiment" if hapt else "its label column is empty"
        return f"note: {recording}: no sample is labelled ({where}), so nothing was scored"
    return (f"note: {recording}: its {labelled} labelled samples hold no whole window of one activity ({window} samples "
            "in a row with the same label), so nothing was scored")


def _write_json(path: str, data: dict[str, Any]) -> None:
    """Atomically (temp file + rename): a reader never sees half a summary."""
    from edge.paths import write_text_atomically

    write_text_atomically(path, json.dumps(data, indent=2) + "\n")


def cmd_record(args: argparse.Namespace) -> int:
    """Recording is a sink of the one pipeline: the decode stage feeds it, it streams to disk (edge/sinks.py)."""
    from firmware_bridge.stopping import StopSignals

    from edge.gaps import samples_to_arrays
    from edge.loop import run_loop
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.sinks import RecordingSink
    from edge.sources import ByteChunk, LinkEvent, SerialSource

    model = None if args.no_model else load_model(args.bundle, args.backend, args.precision, args.threads)
    recorder = RecordingSink(args.out, label=args.label)
    # max_hold_s 0: read bytes as they come (the run's batching would leave up to 0.5 s in the tty buffer,
    # lost with it at an unplug).
    source = SerialSource(args.port, args.baud, connect_timeout_s=args.connect_timeout, max_hold_s=0.0)
    _stop_signals_as_interrupt()
    try:
        if model is None:  # only the decode stage: no windows to make
            decoder = _decoder(args)
            stop = _loop_stop(args)
            interrupted = False
            try:
                for item in source:
                    if isinstance(item, ByteChunk):
                        samples = [f for f in decoder.feed(item.data) if hasattr(f, "seq")]
                        recorder.record_bytes(item.data)
                        if samples:
                            recorder.record_samples(*samples_to_arrays(samples))
                    elif isinstance(item, LinkEvent) and item.kind != "idle":
                        _say(f"{item.kind} {item.port} {item.detail}".rstrip())
                    recorder.tick()
                    if stop():
                        break
            except KeyboardInterrupt:
                interrupted = True
            finally:
                StopSignals.shutdown_begins()
                source.close()
            _say(("interrupted; " if interrupted else "") + f"read {source.bytes_read} bytes, "
                 f"reconnects {source.reconnects}; decoder counters {decoder.counters.as_dict()}")
        else:
            pipeline = Pipeline(model, _smoothing(args), decoder=_decoder(args), calibration=_calibration(args, model),
                                stall_after_s=args.stall_after, recorder=recorder,
                                profile=_profile(args, model), posture_rule=not args.no_posture_rule)
            pipeline.warm_up()
            run_loop(source, pipeline, _sinks(args, model.frontend_config.sample_rate_hz, live=True),
                     report_every_s=args.report_every or None, stop=_loop_stop(args, pipeline),
                     prewarm=not args.no_prewarm)
            _save_calibration(args, pipeline)
    finally:
        recorder.close()
    _check_port_opened(source, args)
    if not recorder.replaced:  # the file was there before and nothing came to replace it
        _say(f"warning: no samples arrived; {args.out} was left as it was")
        return 0
    what = f"{recorder.bytes} bytes" if recorder.raw else f"{recorder.samples} samples"
    _say(f"saved {args.out} ({what}, synced to disk every {recorder.sync_every_s:g} s)")
    if recorder.bytes == 0 or (not recorder.raw and recorder.samples == 0):
        _say(f"warning: no samples arrived; {args.out} holds none")
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    from firmware_bridge.recording import read_recording, read_segments, write_recording_csv

    out = Path(args.out)  # a .csv that is not the recording nor the segments (validate_options)
    recording = read_recording(args.recording)
    labels = read_segments(args.segments, len(recording), recording.rate_hz, args.unit)
    if not any(labels):
        _say(f"warning: {args.segments} has no spans: every sample of {out} is unlabelled")
    if recording.labels is not None and any(recording.labels):
        _say(f"note: {args.recording} had labels of its own; {out} carries the segments' labels instead")
    out.parent.mkdir(parents=True, exist_ok=True)
    write_recording_csv(out, recording.samples, labels)
    counts: dict[str, int] = {}
    for label in labels:
        counts[label or "(unlabelled)"] = counts.get(label or "(unlabelled)", 0) + 1
    _say(f"wrote {out}: {len(labels)} samples; " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.plot:
        from edge.plot import plot_labelled_recording

        plot_labelled_recording(recording.samples, labels, args.plot, recording.rate_hz,
                                title=f"{out.name}: labels from {Path(args.segments).name}")
        _say(f"wrote {args.plot}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import format_table, run_bench

    figures = run_bench(args, progress=_say)
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from edge.monitor import run_monitor

    _stop_signals_as_interrupt()
    return run_monitor(args, _say)


def cmd_demo(args: argparse.Namespace) -> int:
    from edge.demo import print_summary, run_demo

    _stop_signals_as_interrupt()
    summary = run_demo(args, _smoothing(args), lambda rate: _sinks(args, rate, live=True))
    print_summary(summary)
    if args.summary_json:
        _write_json(args.summary_json, summary)
    return 0


def cmd_ports(args: argparse.Namespace) -> int:
    from edge.sources import list_ports

    ports = list_ports()
    if not ports:
        print("no serial ports found; is the IMU board plugged in? (USB cable with data lines, then ls /dev/ttyACM*)")
        return 0
    for port in ports:
        print(port.describe())
    imu = [p for p in ports if p.looks_like_imu]
    if len(imu) == 1:
        print(f"likely IMU board: {imu[0].device} (use --port {imu[0].device}, or --port auto)")
    elif not imu:
        print("none looks like the IMU board (an Arduino Uno 2341:0043/0001 or a CH340 clone 1a86:7523)")
    else:
        print(f"{len(imu)} ports look like the IMU board; give --port explicitly")
    return 0


def cmd_enroll(args: argparse.Namespace) -> int:
    from firmware_bridge.recording import read_recording
    from firmware_bridge.stopping import StopSignals

    from edge.enroll import (
        GET_READY_S,
        GUIDED_MIN_STEP_S,
        MIN_WINDOWS_PER_CLASS,
        check_bundle_for_profiles,
        enrol,
        enrolment_calibration,
        format_summary,
        guided_enrolment,
        guided_steps,
        recording_windows,
        save_profile,
    )
    from edge.model import load_model
    from edge.sources import SerialSource

    model = load_model(args.bundle, args.backend, args.precision, args.threads)
    check_bundle_for_profiles(model)
    if args.mount_calibration and model.mount is not None and Path(args.mount_calibration).exists():
        _calibration(args, model)  # the file enrolment would replace must be a calibration (not, say, a recording)
    if args.recording:
        recording = read_recording(args.recording)
        if recording.labels is None or not any(recording.labels):
            raise CliError(f"{args.recording} has no labels: enrolment needs a label column (CSV "
                           "seq,t_us,ax,ay,az,gx,gy,gz,label) or a HAPT recording with labels.txt beside it; "
                           "or enrol live with --port")
        others = sorted({label for label in recording.labels if label and label not in model.classes})
        if others:
            _say(f"warning: {args.recording} has labels that are not classes of this model: {', '.join(others)}; "
                 f"their windows are not enrolled (its classes are {', '.join(model.classes)})")
        data = recording_windows(model, recording.samples, recording.labels, source=str(args.recording))
    else:
        if not GUIDED_MIN_STEP_S <= args.step_seconds <= 600:
            raise CliError(f"--step-seconds {args.step_seconds:g}: give between {GUIDED_MIN_STEP_S:g} and 600 seconds "
                           f"per posture (each posture must give at least {2 * MIN_WINDOWS_PER_CLASS} whole windows)")
        steps = guided_steps(args.step_seconds)
        minutes = sum(step.seconds + GET_READY_S for step in steps) / 60
        _stop_signals_as_interrupt()
        print(f"enrolment on {args.port}: four short steps (about {minutes:.1f} minutes). Wear the board as you "
              "always do; follow the instructions as they come.", flush=True)
        source = SerialSource(args.port, args.baud, connect_timeout_s=args.connect_timeout)
        try:
            data = guided_enrolment(model, source, say=lambda m: print(m, flush=True), decoder=_decoder(args),
                                    steps=steps)
        except KeyboardInterrupt:  # not a success: a script or service must not take it for a profile
            _say(f"interrupted: the enrolment did not finish; no profile was saved to {args.profile}")
            return EXIT_INTERRUPTED
        StopSignals.shutdown_begins()  # the steps are done: a late Ctrl-C must not lose them while saving
    profile, summary = enrol(model, data)
    save_profile(profile, args.profile)
    if args.mount_calibration:
        calibration = enrolment_calibration(model, data.windows)
        if calibration is None:
            _say(f"warning: no mount calibration written to {args.mount_calibration}: "
                 + ("the bundle has no mount alignment" if model.mount is None else "the enrolment had no walking"))
        else:
            try:
                calibration.save(args.mount_calibration)
            except OSError as exc:
                _say(f"warning: could not save the mount calibration to {args.mount_calibration}: "
                     f"{exc.strerror or exc}")
    print(format_summary(summary, profile), end="", flush=True)
    print(f"saved {args.profile}; use it with `har-edge run --profile {args.profile}` "
          f"(it fits {args.bundle} only)", flush=True)
    return 0


class CliError(ValueError):
    """A bad combination of options."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that are the user's to fix: printed as one line, exit 2, no traceback."""
    from edge.frontend import FrontEndError
    from edge.model import EdgeError
    from edge.postprocess import SmoothingConfigError
    from edge.sinks import SinkError
    from edge.sources import SourceError

    errors: list[type[BaseException]] = [CliError, EdgeError, SinkError, SourceError, SmoothingConfigError, FrontEndError]
    for module, name in (("edge.bundle", "BundleError"), ("edge.inference", "InferenceError"),
                         ("edge.enroll", "ProfileError"),
                         ("firmware_bridge.recording", "RecordingError"), ("edge.bench", "BenchError"),
                         ("edge.mqtt", "MqttError"), ("edge.web", "WebError")):
        try:
            errors.append(getattr(__import__(module, fromlist=[name]), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


COMMANDS = {"run": cmd_run, "replay": cmd_replay, "record": cmd_record, "label": cmd_label, "bench": cmd_bench,
            "demo": cmd_demo, "monitor": cmd_monitor, "ports": cmd_ports, "enroll": cmd_enroll}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    errors = _user_errors()
    try:
        validate_options(args)
        _resolve_port(args)
        return COMMANDS[args.command](args)
    except errors as exc:
        _say(f"error: {exc}", prefix=f"har-edge {args.command}: ")
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C while loading, before the loop took over
        if args.command == "enroll":  # no profile: not a success (cmd_enroll says the same once it has begun)
            _say(f"interrupted: the enrolment did not start; no profile was saved to {args.profile}")
            return EXIT_INTERRUPTED
        _say("interrupted")
        return 0
    except BrokenPipeError:  # `har-edge ... --jsonl - | head`
        sys.stderr.close()
        return 0
    finally:
        # Called in-process (tests, scripts): the caller gets its own handlers back. As the process itself
        # (argv None) the stop signals are ignored until exit: Python's finalization puts the default
        # handlers back, and a late SIGTERM would end a finished run as "killed" (exit -15).
        # Looked up, not imported: `firmware_bridge` loads cobs and pyserial, which --help need not.
        stop_signals = getattr(sys.modules.get("firmware_bridge.stopping"), "StopSignals", None)
        if stop_signals is not None:
            stop_signals.restore() if argv is not None else stop_signals.block_until_exit()


if __name__ == "__main__":
    sys.exit(main())
