"""``har-bridge``: the virtual device, a frame decoder for ports and captures, recording conversion.

    har-bridge simulate RECORDING [--speed N] [--link PATH] [--text] [--loop] [--drop P] [--reboot-at S] ...
    har-bridge decode FILE | --port PORT [--text] [--out FILE.csv|FILE.bin] [--seconds S] [--quiet]
    har-bridge convert RECORDING OUT.csv [--first N --count N]
    har-bridge emulate ELF [--seconds S]
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from firmware_bridge.protocol import DEFAULT_BAUD, CsvLineDecoder, Frame, FrameDecoder, Hello, Log, Sample
from firmware_bridge.recording import RecordingError, RecordingWriter, read_recording, write_recording_csv
from firmware_bridge.simulate import Faults, SimulationError, VirtualDevice


def _print_err(message: str) -> None:
    print(f"har-bridge: error: {message}", file=sys.stderr)

if TYPE_CHECKING:  # argparse's class is generic in its stub only
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]  # what add_subparsers() returns


def _add_simulate(sub: SubParsers) -> None:
    p = sub.add_parser("simulate", help="play a recording on a pseudo-terminal as a virtual IMU device",
                       description="Creates a pty, prints its path, and plays RECORDING (.csv, .bin or HAPT acc_expNN_userMM.txt) "
                                   "as protocol frames at 50 Hz (or N times faster). All times are stream seconds.")
    p.add_argument("recording")
    p.add_argument("--speed", type=float, default=1.0, help="1 = real time (50 Hz), N = N times faster")
    p.add_argument("--link", help="keep a stable symlink to the pty here (like /dev/serial/by-id/...)")
    p.add_argument("--text", action="store_true", help="plain-text lines t_ms,ax,ay,az,gx,gy,gz instead of frames")
    p.add_argument("--loop", action="store_true", help="start the recording again at its end (until Ctrl-C)")
    p.add_argument("--drop", type=float, default=0.0, metavar="P", help="share of samples not sent")
    p.add_argument("--corrupt", type=float, default=0.0, metavar="P", help="share of samples sent with one bit flipped")
    p.add_argument("--duplicate", type=float, default=0.0, metavar="P", help="share of samples sent twice")
    p.add_argument("--garbage", type=float, default=0.0, metavar="P", help="share of samples preceded by random bytes")
    p.add_argument("--stall-at", type=float, metavar="S", help="stop streaming at this stream second (a hung board) ...")
    p.add_argument("--stall-for", type=float, default=0.0, metavar="S", help="... for this many stream seconds")
    p.add_argument("--disconnect-every", type=float, metavar="S", help="close the pty (and remove the link) every S stream seconds ...")
    p.add_argument("--disconnect-for", type=float, default=1.0, metavar="S", help="... for this long, then open a new one")
    p.add_argument("--reboot-at", type=float, action="append", default=[], metavar="S",
                   help="reboot at this stream second with the port kept open (HELLO, seq and time from 0); repeatable")
    p.add_argument("--rate", type=float, metavar="HZ", help="sample (and announce) at this rate instead of the recording's")
    p.add_argument("--seed", type=int, default=0, help="seed of the fault RNG")
    p.add_argument("--sensor", default="virtual", help="sensor name in HELLO frames")


def _simulate(args: argparse.Namespace) -> int:
    try:
        faults = Faults(drop=args.drop, corrupt=args.corrupt, duplicate=args.duplicate, garbage=args.garbage,
                        stall_at=args.stall_at, stall_for=args.stall_for, disconnect_every=args.disconnect_every,
                        disconnect_for=args.disconnect_for, reboot_at=tuple(args.reboot_at), seed=args.seed)
        device = VirtualDevice(args.recording, faults, speed=args.speed, link=args.link, text=args.text,
                               loop=args.loop, sensor=args.sensor, rate_hz=args.rate)
        path = device.start()
    except (RecordingError, SimulationError) as exc:
        _print_err(str(exc))
        return 2
    print(path if args.link is None else f"{path} (link: {args.link})", flush=True)
    print(f"waiting for a reader; {device.n_samples} samples at {device.rate_hz:g} Hz x{args.speed:g}", file=sys.stderr, flush=True)
    interrupted = False

    from firmware_bridge.stopping import StopSignals

    # Stopped once (systemd, kill, Ctrl-C, also when started with `&`), so that the link is removed and the
    # counts printed; a second signal while the device thread stops must not cut that short.
    StopSignals.install(lambda message: print(f"har-bridge: {message}", file=sys.stderr, flush=True))
    try:
        while not device.wait(0.2):
            pass
    except KeyboardInterrupt:
        interrupted = True
    finally:
        StopSignals.shutdown_begins()
        device.stop()
        print(f"injected: {device.injected.as_dict()}", file=sys.stderr, flush=True)
        StopSignals.block_until_exit()  # finalization would put the killing default back
    return 130 if interrupted else 0


def _add_decode(sub: SubParsers) -> None:
    p = sub.add_parser("decode", help="print the frames of a serial port or a raw capture",
                       description="Decodes a raw capture FILE or a serial --port and prints one line per frame, "
                                   "then the decoder's counters.")
    p.add_argument("file", nargs="?", help="a raw capture of serial bytes (.bin)")
    p.add_argument("--port", help="serial port (or a virtual device's pty / link)")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD)
    p.add_argument("--text", action="store_true", help="the plain-text mode (one ax,ay,az,gx,gy,gz line per sample)")
    p.add_argument("--seconds", type=float, help="stop reading the port after this long")
    p.add_argument("--count", type=int, help="stop after this many samples")
    p.add_argument("--out", help="also write what was read: .csv = recording CSV of the samples, .bin = the raw bytes")
    p.add_argument("--quiet", action="store_true", help="print only the counters")


def _format_frame(frame: Frame) -> str:
    if isinstance(frame, Sample):
        return (f"SAMPLE seq={frame.seq} t_us={frame.t_us} acc=({frame.ax:.4f},{frame.ay:.4f},{frame.az:.4f}) "
                f"gyro=({frame.gx:.4f},{frame.gy:.4f},{frame.gz:.4f})")
    if isinstance(frame, Hello):
        return f"HELLO version={frame.version} rate_hz={frame.rate_hz} sensor={frame.sensor!r}"
    if isinstance(frame, Log):
        return f"LOG {frame.text!r}"
    return repr(frame)


def _decode_port(args: argparse.Namespace, consume: Callable[[bytes], bool]) -> int:
    """Feeds what the port sends to `consume` until it says stop, --seconds pass or Ctrl-C -> exit status."""
    import serial  # pyserial: only needed for ports

    try:
        port = serial.Serial(args.port, args.baud, timeout=0.2)
    except (serial.SerialException, ValueError) as exc:
        _print_err(f"cannot open {args.port}: {exc}; check the path and that you may use it (group dialout)")
        return 2
    deadline = time.monotonic() + args.seconds if args.seconds else None
    try:
        with port:
            while deadline is None or time.monotonic() < deadline:
                if consume(port.read(4096)):
                    break
    except serial.SerialException as exc:
        _print_err(f"{args.port} went away: {exc}")
        return 1
    except KeyboardInterrupt:
        pass
    return 0


def _decode(args: argparse.Namespace) -> int:
    if (args.file is None) == (args.port is None):
        _print_err("give either a capture FILE or --port PORT")
        return 2
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".bin"):
        _print_err(f"--out {args.out}: use a .csv (recording CSV) or .bin (raw bytes) name")
        return 2
    decoder = CsvLineDecoder() if args.text else FrameDecoder()
    try:  # what was read goes to disk as it comes (synced every second), as `har-edge record` writes it
        out = RecordingWriter(args.out) if args.out else None
    except RecordingError as exc:
        _print_err(str(exc))
        return 2
    n_samples = 0

    def consume(data: bytes) -> bool:
        nonlocal n_samples
        if out is not None:
            out.write_bytes(data)
        samples: list[Sample] = []
        for frame in decoder.feed(data):
            if args.count is not None and n_samples >= args.count:
                break
            if isinstance(frame, Sample):
                samples.append(frame)
                n_samples += 1
            if not args.quiet:
                print(_format_frame(frame))
        if out is not None:
            out.write_samples(samples)
            out.tick()
        return args.count is not None and n_samples >= args.count

    status = 0
    try:
        if args.file is not None:
            try:
                with open(args.file, "rb") as capture:
                    while (chunk := capture.read(65536)) and not consume(chunk):
                        pass
            except OSError as exc:
                _print_err(f"cannot read {args.file}: {exc.strerror}")
                return 2
        else:
            status = _decode_port(args, consume)
    except RecordingError as exc:  # the disk filled up or went away mid-stream
        _print_err(str(exc))
        return 2
    finally:
        if out is not None:
            out.close()
    print(f"counters: {decoder.counters.as_dict()}", file=sys.stderr)
    return status


def _add_convert(sub: SubParsers) -> None:
    p = sub.add_parser("convert", help="write a recording (.csv, .bin or HAPT acc_ file) as a recording CSV")
    p.add_argument("recording")
    p.add_argument("out", help="output .csv")
    p.add_argument("--first", type=int, default=0, help="index of the first sample to keep")
    p.add_argument("--count", type=int, help="number of samples to keep (default: all)")


def _convert(args: argparse.Namespace) -> int:
    if not args.out.lower().endswith(".csv"):
        _print_err(f"{args.out}: the output is a recording CSV; give a .csv name")
        return 2
    try:
        rec = read_recording(args.recording)
        end = None if args.count is None else args.first + args.count
        samples = rec.samples[args.first:end]
        labels = rec.labels[args.first:end] if rec.labels is not None else None
        if not samples:
            _print_err(f"--first {args.first} --count {args.count} selects no samples of the {len(rec.samples)} in {args.recording}")
            return 2
        write_recording_csv(args.out, samples, labels)
    except RecordingError as exc:
        _print_err(str(exc))
        return 2
    except OSError as exc:
        _print_err(f"cannot write {args.out}: {exc.strerror}")
        return 2
    print(f"wrote {len(samples)} samples to {args.out}")
    return 0


def _add_emulate(sub: SubParsers) -> None:
    p = sub.add_parser("emulate", help="run the synthetic-sensor firmware in qemu-system-avr and check its frames")
    p.add_argument("elf")
    p.add_argument("--seconds", type=float, default=5.0)


def _emulate(args: argparse.Namespace) -> int:
    from firmware_bridge import emulate

    return emulate.main([args.elf, "--seconds", str(args.seconds)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="har-bridge", description="The IMU end of the HAR pipeline (wire protocol: PROTOCOL.md).")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_simulate(sub)
    _add_decode(sub)
    _add_convert(sub)
    _add_emulate(sub)
    args = parser.parse_args(argv)
    # Output piped into `head` should end quietly, not with a BrokenPipeError traceback.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    return {"simulate": _simulate, "decode": _decode, "convert": _convert, "emulate": _emulate}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
