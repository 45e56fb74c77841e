"""A live web view: one self-contained page, updates pushed with server-sent events (stdlib only).

    har-edge run --port /dev/ttyACM0 --web 127.0.0.1:8080       this wearer
    har-edge monitor --mqtt mqtt://broker --web 127.0.0.1:8080   the whole fleet

GET /            the page (no external assets, no build step: works offline on a Pi)
GET /events      text/event-stream: `snapshot` (every device, with its timeline) then `update`s
GET /state.json  the same snapshot, once

Binds to loopback unless told otherwise; requests whose Host header is not a loopback name are
refused while bound to loopback (a web page elsewhere cannot read it through DNS rebinding).
Exposing it: docs/mqtt.md#exposing-the-web-page.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import ipaddress
import json
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TIMELINE_S = 300.0  # the page's timeline: the last 5 minutes
CLIENT_QUEUE = 1000  # events buffered per browser; a browser that falls further behind is reconnected
KEEPALIVE_S = 15.0
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


class WebError(ValueError):
    """A bad --web address, or one that cannot be bound; the CLI prints it."""


def parse_address(text: str) -> tuple[str, int]:
    """'HOST:PORT', ':PORT' or 'PORT' (host 127.0.0.1); '[::1]:PORT' for IPv6; port 0 = any free one."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
        if not 0 <= number <= 65535:
            raise ValueError
    except ValueError:
        raise WebError(f"--web {text!r}: use HOST:PORT, e.g. 127.0.0.1:8080 (the port a number from 0 to 65535)") from None
    return host, number


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--web", metavar="HOST:PORT",
                        help="serve a live page at http://HOST:PORT/ (loopback unless told otherwise; "
                             "port 0 picks a free one; docs/mqtt.md says how to expose it safely)")


# -- what the page shows ------------------------------------------------------------------------

class Fleet:
    """Every device's live view (label, confidence, since, timeline, counters, status), and the
    browsers listening to its changes. Fed by a local pipeline (WebSink) or by MQTT (monitor)."""

    def __init__(self, timeline_s: float = TIMELINE_S):
        self.timeline_s = timeline_s
        self.devices: dict[str, dict[str, Any]] = {}
        self._timelines: dict[str, deque[list[Any]]] = {}  # [t, label] points
        self._lock = threading.Lock()
        self._listeners: list[_Listener] = []

    def _view(self, device: str) -> dict[str, Any]:
        if device not in self.devices:
            self.devices[device] = {"device": device, "status": None, "label": None, "confidence": None,
                                    "raw_label": None, "sample_end": None, "t": None, "since": None,
                                    "seen": None, "windows": 0, "counters": None}
            self._timelines[device] = deque()
        return self.devices[device]

    def apply(self, device: str, kind: str, data: Any, arrival: float | None = None) -> None:
        """kind: window (a window result), state, status ("online" / "offline") or counters."""
        arrival = time.time() if arrival is None else arrival
        with self._lock:
            view = self._view(device)
            point = None
            if kind == "window":
                if view["label"] != data["label"]:
                    view["since"] = data["t"]
                view.update(label=data["label"], confidence=data["confidence"], raw_label=data.get("raw_label"),
                            sample_end=data["sample_end"], t=data["t"], seen=arrival)
                view["windows"] += 1
                point = [data["t"], data["label"]]
                timeline = self._timelines[device]
                timeline.append(point)
                while timeline and timeline[0][0] < data["t"] - self.timeline_s:
                    timeline.popleft()
            elif kind == "state":  # retained: what a monitor knows before the next window
                if view["label"] is None:
                    view.update(label=data.get("label"), confidence=data.get("confidence"), since=data.get("since"),
                                sample_end=data.get("sample_end"))
            elif kind == "status":
                view["status"] = data
            elif kind == "counters":
                view["counters"] = data
            else:
                raise ValueError(f"unknown kind {kind!r}")
            self._broadcast("update", {"view": dict(view), "point": point})

    def snapshot(self) -> list[dict[str, Any]]:
        with self._lock:
            return self._snapshot()

    def _snapshot(self) -> list[dict[str, Any]]:
        return [{**view, "timeline": list(self._timelines[d])} for d, view in sorted(self.devices.items())]

    def listen(self) -> tuple[_Listener, list[dict[str, Any]]]:
        """A new browser: its event queue, and the snapshot it starts from (no update missed or doubled)."""
        with self._lock:
            listener = _Listener()
            self._listeners.append(listener)
            return listener, self._snapshot()

    def forget(self, listener: _Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    def close_listeners(self) -> None:
        with self._lock:
            for listener in self._listeners:
                listener.overflowed = True  # wakes and ends its stream
                try:
                    listener.events.put_nowait(None)
                except queue.Full:
                    pass
            self._listeners.clear()

    def _broadcast(self, event: str, data: object) -> None:
        message = f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
        for listener in list(self._listeners):
            try:
                listener.events.put_nowait(message)
            except queue.Full:  # a stalled browser: end its stream; EventSource reconnects to a fresh snapshot
                listener.overflowed = True
                self._listeners.remove(listener)


class _Listener:
    def __init__(self) -> None:
        self.events: queue.Queue[bytes | None] = queue.Queue(maxsize=CLIENT_QUEUE)  # None: the stream ends
        self.overflowed = False


# -- the server -----------------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    server: LiveServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # no line per request on the terminal
        pass

    def _host_allowed(self) -> bool:
        if not self.server.loopback_only:
            return True
        host = (self.headers.get("Host") or "").strip()
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] or host
        return is_loopback(name)

    def _send(self, status: int, body: bytes, content_type: str, extra: dict[str, Any] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if not self._host_allowed():
            self._send(403, b"this page is served to loopback host names only\n", "text/plain; charset=utf-8")
            return
        path = self.path.split("?", 1)[0]
        if path == "/":
            self._send(200, PAGE, "text/html; charset=utf-8",
                       {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY"})
        elif path == "/state.json":
            body = json.dumps(self.server.fleet.snapshot(), separators=(",", ":")).encode()
            self._send(200, body, "application/json")
        elif path == "/events":
            self._events()
        else:
            self._send(404, b"not found\n", "text/plain; charset=utf-8")

    def _events(self) -> None:
        listener, snapshot = self.server.fleet.listen()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")  # nginx: do not buffer the stream
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"retry: 1000\n" + f"event: snapshot\ndata: {json.dumps(snapshot)}\n\n".encode())
            self.wfile.flush()
            while not listener.overflowed:
                try:
                    message = listener.events.get(timeout=KEEPALIVE_S)
                except queue.Empty:
                    message = b": keep-alive\n\n"  # finds browsers that went away
                if message is None:
                    break
                self.wfile.write(message)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass
        finally:
            self.server.fleet.forget(listener)


class LiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, fleet: Fleet):
        import socket

        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.fleet = fleet
        self.loopback_only = is_loopback(host)
        try:
            super().__init__((host, port), _Handler)
        except OSError as exc:
            raise WebError(f"--web {host}:{port}: cannot serve there ({exc.strerror}); "
                           "choose a free port (0 picks one) on an address of this machine") from None
        self._thread = threading.Thread(target=self.serve_forever, name="har-web", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        assert isinstance(host, str)  # an AF_INET/AF_INET6 server: a text address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    def start(self) -> LiveServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.fleet.close_listeners()
        self.shutdown()
        self.server_close()


def start_server(address: str, fleet: Fleet, notify: Callable[[str], None]) -> LiveServer:
    host, port = parse_address(address)
    server = LiveServer(host, port, fleet).start()
    notify(f"live page at {server.url}")
    if not server.loopback_only:
        notify(f"warning: the live page on {host} has no authentication or TLS: anyone who can reach this "
               "address sees the labels; put it behind a reverse proxy or an SSH tunnel (docs/mqtt.md)")
    return server


class WebSink:
    """A Sink (edge/sinks.py) that shows this process's own pipeline on the live page."""

    def __init__(self, server: LiveServer, device_id: str):
        self.server, self.device_id = server, device_id
        server.fleet.apply(device_id, "status", "online")

    def emit(self, result: dict[str, Any]) -> None:
        self.server.fleet.apply(self.device_id, "window", result)

    def counters(self, counters: dict[str, Any]) -> None:
        self.server.fleet.apply(self.device_id, "counters", counters)

    def close(self) -> None:
        self.server.fleet.apply(self.device_id, "status", "offline")
        self.server.close()


def web_sink(args: argparse.Namespace, notify: Callable[[str], None]) -> WebSink | None:
    """The sink for `--web HOST:PORT`, or None without it."""
    if not getattr(args, "web", None):
        return None
    from edge.mqtt import check_device_id, default_device_id

    device_id = check_device_id(args.device_id) if getattr(args, "device_id", None) else default_device_id()
    return WebSink(start_server(args.web, Fleet(), notify), device_id)


# -- the page -------------------------------------------------------------------------------------

SCRIPT = r"""
"use strict";
const PALETTE = {WALKING: "#2e7d32", WALKING_UPSTAIRS: "#1565c0", WALKING_DOWNSTAIRS: "#6a1b9a",
  SITTING: "#ef6c00", STANDING: "#00838f", LAYING: "#795548", uncertain: "#9e9e9e"};
const EXTRA = ["#c62828", "#ad1457", "#4527a0", "#283593", "#00695c", "#9e9d24", "#ff8f00", "#4e342e"];
const TIMELINE_S = 300;
const devices = new Map();  // id -> {view, timeline: [[t, label], ...], node}

function colour(label) {
  if (label in PALETTE) return PALETTE[label];
  let h = 0;
  for (const c of String(label)) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return EXTRA[h % EXTRA.length];
}
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;  // never innerHTML: device ids and labels come from the network
  return e;
}
function card(id) {
  const node = el("section", "device");
  node.dataset.device = id;
  const head = el("header");
  head.append(el("span", "id", id), el("span", "status"), el("span", "age"));
  const conf = el("div", "confidence");
  conf.append(el("div", "bar"), el("span", "value"));
  node.append(head, el("div", "label", "-"), conf, el("canvas", "timeline"), el("div", "legend"),
              el("div", "state"), el("table", "counters"));
  document.getElementById("devices").append(node);
  return node;
}
function counterRows(c) {
  if (!c) return [];
  const g = c.gaps || {}, d = c.decoder || {}, l = c.link || {}, m = c.mqtt;
  const rows = [["windows", c.windows], ["lost samples", g.lost_samples], ["interpolated", g.interpolated_samples],
    ["long gaps", g.long_gaps], ["invalid", g.invalid_samples], ["crc errors", d.crc_errors],
    ["malformed", (d.malformed || 0) + (d.bad_lines || 0)], ["device restarts", g.device_restarts],
    ["reconnects", l.reconnects], ["rate", c.rate_hz == null ? "measuring" : c.rate_hz.toFixed(2) + " Hz"],
    ["lost in outages", g.outage_samples]];
  // A live source's link: lost more often than back means the board is gone now (edge/monitor.py faults).
  if (l.connects || l.disconnects)
    rows.unshift(["board", (l.disconnects || 0) >= Math.max(1, l.connects || 0) ? "UNPLUGGED" : "connected"]);
  if (m) rows.push(["mqtt queued", m.queued],
                   ["mqtt dropped", Object.values(m.dropped || {}).reduce((a, b) => a + b, 0)]);
  return rows;
}
function render(id) {
  const d = devices.get(id), v = d.view, n = d.node;
  n.dataset.sampleEnd = v.sample_end == null ? "" : String(v.sample_end);
  const label = n.querySelector(".label");
  label.textContent = v.label == null ? "-" : v.label;
  label.style.color = v.label == null ? "" : colour(v.label);
  const st = n.querySelector(".status");
  st.textContent = v.status || "";
  st.className = "status " + (v.status || "");
  n.querySelector(".bar").style.width = (100 * (v.confidence || 0)).toFixed(0) + "%";
  n.querySelector(".confidence .value").textContent = v.confidence == null ? "" : v.confidence.toFixed(2);
  const c = v.counters || {};
  const parts = [];
  if (c.mount) parts.push("mount " + (c.mount.calibrated ? "calibrated" : "calibrating") + " (" + c.mount.moving_windows + " moving windows)");
  if (c.postures) parts.push("posture rule read " + c.postures.read + " (changed " + c.postures.swapped + ", sit/stand transitions " + (c.postures.rises || 0) + ")");
  if (c.profile) parts.push("profile " + (typeof c.profile === "object" ? JSON.stringify(c.profile) : c.profile));
  if (v.since) parts.push("since " + new Date(v.since * 1000).toLocaleTimeString());
  n.querySelector(".state").textContent = parts.join(" \u00b7 ");
  const table = n.querySelector(".counters");
  table.replaceChildren(...counterRows(v.counters).map(([k, val]) => {
    const tr = el("tr"); tr.append(el("th", "", k), el("td", "", val == null ? "" : String(val))); return tr; }));
  drawTimeline(d);
}
function drawTimeline(d) {
  const canvas = d.node.querySelector(".timeline");
  const w = canvas.clientWidth || 600, h = 36;
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const tl = d.timeline;
  if (!tl.length) return;
  const end = Math.max(Date.now() / 1000, tl[tl.length - 1][0]), start = end - TIMELINE_S;
  const seen = new Set();
  for (let i = 0; i < tl.length; i++) {
    const [t, label] = tl[i];
    const next = i + 1 < tl.length ? Math.min(tl[i + 1][0], t + 3) : t + 1.28;
    ctx.fillStyle = colour(label);
    ctx.fillRect((t - start) / TIMELINE_S * w, 0, Math.max(1, (next - t) / TIMELINE_S * w), h);
    seen.add(label);
  }
  const legend = d.node.querySelector(".legend");
  legend.replaceChildren(...[...seen].map(label => {
    const s = el("span", "key", label); s.style.borderColor = colour(label); return s; }));
}
function upsert(view, timeline) {
  let d = devices.get(view.device);
  if (!d) { d = {view, timeline: [], node: card(view.device)}; devices.set(view.device, d); }
  d.view = view;
  if (timeline) d.timeline = timeline;
  render(view.device);
  return d;
}
function tickAges() {
  const now = Date.now() / 1000;
  for (const d of devices.values()) {
    d.node.querySelector(".age").textContent = d.view.seen ? "last window " + Math.max(0, now - d.view.seen).toFixed(0) + " s ago" : "";
    const tl = d.timeline;
    while (tl.length && tl[0][0] < now - TIMELINE_S) tl.shift();
    drawTimeline(d);
  }
}
const source = new EventSource("/events");
source.addEventListener("snapshot", e => {
  for (const d of devices.values()) d.node.remove();
  devices.clear();
  for (const view of JSON.parse(e.data)) upsert(view, view.timeline);
  document.getElementById("link").textContent = "live";
});
source.addEventListener("update", e => {
  const m = JSON.parse(e.data), d = upsert(m.view, null);
  if (m.point) { d.timeline.push(m.point); drawTimeline(d); }
});
source.onerror = () => { document.getElementById("link").textContent = "reconnecting..."; };
setInterval(tickAges, 1000);
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 1rem; overflow-x: hidden; background: #fafafa; color: #212121; }
h1 { font-size: 1.1rem; font-weight: 600; } #link { color: #757575; font-weight: normal; margin-left: .5rem; }
#devices { display: grid; grid-template-columns: repeat(auto-fill, minmax(22rem, 1fr)); gap: 1rem; }
.device { background: white; border-radius: .5rem; padding: .8rem 1rem; box-shadow: 0 1px 3px #0002; }
.device header { display: flex; gap: .6rem; align-items: baseline; font-size: .9rem; }
.id { font-weight: 600; } .age { color: #757575; margin-left: auto; }
.status.online { color: #2e7d32; } .status.offline { color: #c62828; }
.label { font-size: 2.4rem; font-weight: 700; margin: .3rem 0; word-break: break-word; }
.confidence { position: relative; height: 1.1rem; background: #eee; border-radius: .3rem; }
.confidence .bar { height: 100%; background: #90caf9; border-radius: .3rem; }
.confidence .value { position: absolute; right: .4rem; top: 0; font-size: .8rem; }
.timeline { width: 100%; height: 36px; margin-top: .6rem; background: #f0f0f0; display: block; }
.legend { font-size: .75rem; margin: .2rem 0; display: flex; flex-wrap: wrap; gap: .2rem .6rem; } .key { border-left: .8rem solid; padding: 0 .5rem 0 .3rem; }
.state { font-size: .8rem; color: #424242; margin: .3rem 0; }
.counters { font-size: .75rem; border-collapse: collapse; } .counters th { text-align: left; font-weight: normal;
  color: #616161; padding-right: 1rem; }
"""

_script_hash = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
_style_hash = base64.b64encode(hashlib.sha256(STYLE.encode()).digest()).decode()
# Only this page's own script and style run; it talks to nothing but this server.
CSP = (f"default-src 'none'; script-src 'sha256-{_script_hash}'; style-src 'sha256-{_style_hash}'; "
       "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>har-edge live</title><style>{STYLE}</style></head>
<body><h1>har-edge: live activity<span id="link">connecting...</span></h1>
<main id="devices"></main>
<script>{SCRIPT}</script></body></html>
""".encode()
