"""Real services for the tests, on loopback only: a Mosquitto broker, an MQTT subscriber (paho),
headless Chromium driven over the DevTools protocol (a stdlib websocket), and a reader for the
stderr of a `har-edge` subprocess, which `har_edge` starts and `stop` ends.

Missing binaries skip with the reason, unless HAR_REQUIRE_SERVICES is set (CI): then they fail.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import REPO

STARTUP_S = 20.0  # how long a service may take to come up before the test fails (a slow, shared CI machine)


def need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed (Debian package {package}; .ci/run installs it)"
        if os.environ.get("HAR_REQUIRE_SERVICES"):
            pytest.fail(message + " and HAR_REQUIRE_SERVICES is set")
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Poll until condition() is truthy; fail naming `what` after timeout (a hang, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


class Mosquitto:
    """A real broker on a free loopback port, with its config, persistence and log in `root`."""

    def __init__(self, root: Path, extra: str = "", anonymous: bool = True):
        self.exe = need("mosquitto", "mosquitto")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.log = root / "mosquitto.log"
        lines = [f"listener {self.port} 127.0.0.1", f"allow_anonymous {str(anonymous).lower()}",
                 "persistence true", f"persistence_location {root}/", f"log_dest file {self.log}",
                 "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to user `mosquitto`, who cannot write `root`
        self.conf = root / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n" + extra)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> Mosquitto:
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening():
            if self.proc.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.proc.returncode}: {self.log.read_text() if self.log.exists() else ''}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_until(listening, f"mosquitto on port {self.port}", STARTUP_S)
        return self

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence database (retained messages, sessions) and exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=30)
        self.proc = None


class Subscriber:
    """An independent paho client that keeps every message it receives, in arrival order."""

    def __init__(self, port: int, topics: list[str], client_id: str = "", persistent: bool = False,
                 username: str | None = None, password: str | None = None, ca_file: str | None = None):
        import paho.mqtt.client as paho

        self.messages: list[tuple[str, bytes, bool]] = []  # (topic, payload, retain)
        self.connected = threading.Event()
        self.refused = queue.Queue()
        self.client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        if username:
            self.client.username_pw_set(username, password)
        if ca_file:
            self.client.tls_set(ca_certs=ca_file)

        def on_connect(client, userdata, flags, reason_code, properties):
            if reason_code.is_failure:
                self.refused.put(reason_code)
                return
            client.subscribe([(t, 1) for t in topics])

        self.client.on_connect = on_connect
        self.client.on_subscribe = lambda client, userdata, mid, codes, properties: self.connected.set()
        self.client.on_message = lambda client, userdata, m: self.messages.append((m.topic, m.payload, m.retain))
        self.client.reconnect_delay_set(0.2, 1)
        self.client.connect_async("localhost" if ca_file else "127.0.0.1", port)
        self.client.loop_start()

    def wait_subscribed(self) -> Subscriber:
        if not self.connected.wait(STARTUP_S):
            pytest.fail("the test's MQTT subscriber did not get subscribed")
        return self

    def on(self, topic: str) -> list:
        return [(payload, retain) for t, payload, retain in list(self.messages) if t == topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Output:
    """Collects a subprocess's stream line by line in a thread (no pipe can fill up and block it)."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, words: str, timeout: float = 60.0) -> str:
        return wait_until(lambda: next((line for line in list(self.lines) if words in line), None),
                          f"{words!r} in the output:\n{self.text[-3000:]}", timeout)

    def finish(self) -> str:
        self._thread.join(timeout=30)
        return self.text


# -- headless Chromium over the DevTools protocol ----------------------------------------------

class WebSocket:
    """The client side of RFC 6455, just enough for the DevTools protocol (text frames)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET {parts.path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                           f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                raise ConnectionError("the DevTools endpoint closed during the websocket handshake")
            head += chunk
        if b" 101 " not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(f"websocket handshake refused: {head[:200]!r}")

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("the DevTools websocket closed")
            data += chunk
        return data

    def send(self, text: str) -> None:
        payload, mask = text.encode(), os.urandom(4)
        n = len(payload)
        length = bytes([0x80 | n]) if n < 126 else (bytes([0x80 | 126]) + n.to_bytes(2, "big") if n < 65536
                                                    else bytes([0x80 | 127]) + n.to_bytes(8, "big"))
        self.sock.sendall(b"\x81" + length + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def recv(self) -> str:
        message = b""
        while True:
            b0, b1 = self._read(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(self._read(2), "big")
            elif n == 127:
                n = int.from_bytes(self._read(8), "big")
            payload = self._read(n)
            opcode = b0 & 0x0F
            if opcode == 8:
                raise ConnectionError("the DevTools websocket was closed by the browser")
            if opcode in (9, 10):  # ping / pong: no payload for the caller
                continue
            message += payload
            if b0 & 0x80:  # FIN
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Chromium:
    """Headless Chromium with one page, driven over its DevTools websocket on loopback."""

    def __init__(self, profile: Path):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:
            need("chromium", "chromium")
        profile.mkdir(parents=True, exist_ok=True)
        self.log = open(profile / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"], stdout=self.log, stderr=self.log)
        port_file = profile / "DevToolsActivePort"

        def devtools_port():
            if self.proc.poll() is not None:
                pytest.fail(f"chromium exited with {self.proc.returncode}: {(profile / 'chromium.log').read_text()[-2000:]}")
            text = port_file.read_text() if port_file.exists() else ""
            return int(text.split()[0]) if text.strip() else None

        port = wait_until(devtools_port, "chromium's DevTools port", STARTUP_S)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as response:
            pages = [t for t in json.load(response) if t.get("type") == "page"]
        self.ws = WebSocket(pages[0]["webSocketDebuggerUrl"])
        self._id = 0

    def call(self, method: str, **params) -> dict:
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise RuntimeError(f"DevTools {method}: {message['error']}")
                return message["result"]

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


# ---- the program under test, as a subprocess ------------------------------------------------------
def har_edge(*args, env=None) -> tuple[subprocess.Popen, Output]:
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", *map(str, args)], cwd=REPO, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})})
    return proc, Output(proc.stderr)


def signal_until_exit(proc: subprocess.Popen, signum: int, every_s: float = 0.05, timeout_s: float = 30) -> None:
    """Send `signum` every `every_s` until the process exits (an impatient Ctrl-C, a repeated `systemctl stop`);
    kill it and fail if it is still running `timeout_s` after the first. The caller reads its output."""
    deadline = time.time() + timeout_s
    while proc.poll() is None and time.time() < deadline:
        proc.send_signal(signum)
        time.sleep(every_s)
    if proc.poll() is None:
        proc.kill()
        pytest.fail(f"still running {timeout_s:g} s after the first signal {signal.Signals(signum).name}")


def stop(proc: subprocess.Popen, err: Output) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait()
        pytest.fail(f"har-edge did not exit after SIGINT; its threads:\n{err.finish()[-6000:]}")
    text = err.finish()
    assert proc.returncode == 0, text
    assert "Traceback" not in text, text
    return text
