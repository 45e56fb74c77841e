"""`har-edge monitor`: every wearer's live label from an MQTT broker, in one terminal table.

    har-edge monitor --mqtt mqtt://monitor@broker.local [--web 127.0.0.1:8080] [--stats-json FILE]

Subscribes to PREFIX/+/window, state, status and counters (docs/mqtt.md) and shows, per device,
its status, current label and confidence, since when, the age of its last window, the sample rate
it measures and its fault counters. On a terminal the table is redrawn in place every --refresh
seconds; elsewhere one line per change of label. `--web` serves the same fleet as a live page.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from paho.mqtt.client import Client, ConnectFlags, MQTTMessage
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

from firmware_bridge.stopping import StopSignals

from edge.mqtt import (
    Broker,
    ConnectionReporter,
    MqttError,
    add_broker_arguments,
    check_prefix,
    new_client,
    parse_broker,
)
from edge.web import Fleet, add_web_arguments, start_server

KINDS = ("window", "state", "status", "counters")
HISTORY = 10_000  # windows remembered per device (3.5 h): a monitor that runs for months stays bounded


def add_monitor_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--mqtt", required=True, metavar="URL", help="the broker: mqtt://[user@]host[:port] or mqtts://...")
    add_broker_arguments(p)
    add_web_arguments(p)
    p.add_argument("--refresh", type=float, default=1.0, metavar="S", help="redraw the table every S seconds (default 1)")
    p.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    p.add_argument("--quiet", action="store_true", help="no table or label lines")
    p.add_argument("--stats-json", metavar="PATH",
                   help="on exit, write per device the window messages received, duplicates, the delay from window "
                        "to monitor and the last windows' [sample_end, t, arrival] (benchmarks, audits)")


class Monitor:
    """The MQTT subscriber: feeds a Fleet and keeps per-device delivery statistics."""

    def __init__(self, broker: Broker, prefix: str, fleet: Fleet, notify: Callable[[str], None],
                 on_window: Callable[[str, dict[str, Any]], None] | None = None):
        self.prefix = check_prefix(prefix)
        self.fleet = fleet
        self.notify = notify
        self.on_window = on_window
        self.received: dict[str, int] = {}  # window messages, duplicates included
        self.duplicates: dict[str, int] = {}
        self.history: dict[str, deque[tuple[int, float, float]]] = {}  # the last HISTORY (sample_end, t, arrival) per device
        self._recent: dict[str, set[Any]] = {}  # (sample_end, t) in history: a resend has both, a restarted publisher not
        self.malformed = 0
        self._lock = threading.Lock()
        self.connection = ConnectionReporter(broker, notify, "the table shows what arrived so far")
        self.client = new_client(broker, client_id=f"har-edge-monitor-{os.getpid()}")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = lambda client, userdata: self.connection.on_connect_failed()
        self._stopping = False
        self.client.on_disconnect = lambda c, u, f, rc, p: self.connection.on_disconnected(rc, expected=self._stopping)
        self.client.on_message = self._on_message
        self.client.connect_async(broker.host, broker.port, keepalive=30)

    def start(self) -> Monitor:
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self._stopping = True
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if self.connection.on_connected(reason_code, f"subscribed to {self.prefix}/+/{{{','.join(KINDS)}}}"):
            client.subscribe([(f"{self.prefix}/+/{kind}", 1) for kind in KINDS])

    def _on_message(self, client: Client, userdata: object, message: MQTTMessage) -> None:
        arrival = time.time()
        device, _, kind = message.topic[len(self.prefix) + 1:].partition("/")
        try:
            text = message.payload.decode("utf-8")
            data: Any = text if kind == "status" else json.loads(text)
            if kind == "window":
                end, t = int(data["sample_end"]), float(data["t"])
            self.fleet.apply(device, kind, data, arrival)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            with self._lock:
                self.malformed += 1
                first = self.malformed == 1
            if first:
                self.notify(f"warning: a malformed message on {message.topic} was ignored (counted as malformed)")
            return
        if kind == "window":
            with self._lock:
                self._count(device, end, t, arrival)
            if self.on_window is not None:
                self.on_window(device, data)

    def _count(self, device: str, end: int, t: float, arrival: float) -> None:
        history = self.history.setdefault(device, deque())
        recent = self._recent.setdefault(device, set())
        self.received[device] = self.received.get(device, 0) + 1
        if (end, t) in recent:  # QoS 1 is at least once: a resend after a reconnect
            self.duplicates[device] = self.duplicates.get(device, 0) + 1
            return
        if len(history) == HISTORY:
            recent.discard(history.popleft()[:2])
        history.append((end, t, arrival))
        recent.add((end, t))

    def stats(self, with_history: bool = False) -> dict[str, Any]:
        """Per device: window messages, duplicates, delay from window (`t`) to arrival here over its
        history; with_history adds the history itself ([sample_end, t, arrival] rows)."""
        import numpy as np  # late: `har-edge --help` builds this module's parser without numpy

        with self._lock:
            devices = {}
            for device, count in sorted(self.received.items()):
                rows = np.asarray(self.history[device], dtype=np.float64).reshape(-1, 3)  # (n, 3)
                devices[device] = {"window_messages": count, "duplicates": self.duplicates.get(device, 0),
                                   "delay_ms": delay_summary((rows[:, 2] - rows[:, 1]) * 1e3)}
                if with_history:
                    devices[device]["history"] = [[int(e), t, a] for e, t, a in self.history[device]]
            every = [a - t for h in self.history.values() for _, t, a in h]  # delay of every window kept
            return {"devices": devices, "window_messages": sum(self.received.values()),
                    "duplicates": sum(self.duplicates.values()), "malformed": self.malformed,
                    "history_per_device": HISTORY, "delay_ms": delay_summary(np.asarray(every) * 1e3)}


def delay_summary(ms: np.ndarray) -> dict[str, Any]:
    import numpy as np

    if not len(ms):
        return {"n": 0}
    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
    return {"n": int(len(ms)), "median": round(float(p50), 2), "p95": round(float(p95), 2),
            "p99": round(float(p99), 2), "max": round(float(ms.max()), 2)}


def faults(counters: dict[str, Any] | None) -> str:
    """The non-zero fault counters of a device, shortest first-glance form."""
    if not counters:
        return ""
    gaps, dec, link, mqtt = (counters.get(k) or {} for k in ("gaps", "decoder", "link", "mqtt"))
    # Lost more often than back: the board is unplugged (or rebooting) right now; the runtime is waiting for it.
    unplugged = (link.get("disconnects") or 0) >= max(1, link.get("connects") or 0)
    items = [("lost", gaps.get("lost_samples")), ("lost in outages", gaps.get("outage_samples")),
             ("long gaps", gaps.get("long_gaps")),
             ("crc", dec.get("crc_errors")), ("malformed", (dec.get("malformed") or 0) + (dec.get("bad_lines") or 0)),
             ("restarts", gaps.get("device_restarts")), ("reconnects", link.get("reconnects")),
             ("mqtt dropped", sum((mqtt.get("dropped") or {}).values())), ("rate warnings", counters.get("rate_warnings"))]
    shown = (["UNPLUGGED"] if unplugged else []) + [f"{name} {value}" for name, value in items if value]
    return ", ".join(shown) or "none"


def format_table(views: list[dict[str, Any]], now: float | None = None) -> str:
    now = time.time() if now is None else now
    header = f"{'device':<16s} {'status':<8s} {'label':<20s} {'conf':>5s} {'since':>8s} {'age':>6s} {'rate':>9s} {'windows':>7s}  faults"
    lines = [header]
    for v in views:
        since = time.strftime("%H:%M:%S", time.localtime(v["since"])) if v.get("since") else ""
        age = f"{now - v['seen']:.0f} s" if v.get("seen") else ""
        rate = (v.get("counters") or {}).get("rate_hz")
        conf = v.get("confidence")
        lines.append(f"{v['device'][:16]:<16s} {(v.get('status') or '?'):<8s} {(v.get('label') or '-')[:20]:<20s} "
                     f"{'' if conf is None else f'{conf:.2f}':>5s} {since:>8s} {age:>6s} "
                     f"{'' if rate is None else f'{rate:.1f} Hz':>9s} {v.get('windows', 0):>7d}  {faults(v.get('counters'))}")
    return "\n".join(lines)


def _write_json(path: str, data: dict[str, Any]) -> None:
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(target)
    except OSError as exc:
        raise MqttError(f"--stats-json {path}: cannot write it ({exc.strerror}); choose a writable path") from None


def run_monitor(args: argparse.Namespace, notify: Callable[[str], None], stream: IO[str] | None = None) -> int:
    stream = stream if stream is not None else sys.stdout
    broker = parse_broker(args.mqtt, args.mqtt_ca, args.mqtt_password_file, warn=notify)
    fleet = Fleet()
    tty = bool(getattr(stream, "isatty", lambda: False)())
    labels: dict[str, str] = {}

    def on_window(device: str, result: dict[str, Any]) -> None:  # the log form: one line per change of label
        if args.quiet or tty or labels.get(device) == result["label"]:
            return
        labels[device] = result["label"]
        stream.write(f"{time.strftime('%H:%M:%S')} {device} {result['label']} {result['confidence']:.2f}\n")
        stream.flush()

    monitor = Monitor(broker, args.mqtt_prefix, fleet, notify, on_window)
    server = start_server(args.web, fleet, notify) if args.web else None
    deadline = None if args.duration is None else time.monotonic() + args.duration
    monitor.start()
    interrupted = False
    try:
        while deadline is None or time.monotonic() < deadline:
            time.sleep(max(0.05, min(args.refresh, (deadline - time.monotonic()) if deadline else args.refresh)))
            if tty and not args.quiet:
                stream.write("\x1b[H\x1b[J" + format_table(fleet.snapshot()) + "\n")
                stream.flush()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        StopSignals.shutdown_begins()  # a second signal must not lose the stats below
        monitor.stop()
        if server is not None:
            server.close()
    stats = monitor.stats(with_history=bool(args.stats_json))
    if not args.quiet and not tty:
        stream.write(format_table(fleet.snapshot()) + "\n")
    notify(("interrupted; " if interrupted else "") + f"{len(stats['devices'])} devices, {stats['window_messages']} "
           f"window messages ({stats['duplicates']} duplicates), {stats['malformed']} malformed; "
           f"delay window -> monitor median {stats['delay_ms'].get('median', '-')} ms")
    if args.stats_json:
        _write_json(args.stats_json, stats)
    return 0

