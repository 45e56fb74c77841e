"""Labels published to an MQTT broker (paho-mqtt), so that a fleet of wearers is seen in one place.

    har-edge run --port /dev/ttyACM0 --mqtt mqtt://wearer7@broker.local --device-id wearer7

Topics (the contract, with every payload: docs/mqtt.md), PREFIX `har` unless --mqtt-prefix:
    PREFIX/ID/window    one message per window, QoS 1: the `--jsonl` line's JSON object
    PREFIX/ID/state     retained: {"label", "confidence", "since", "sample_end"}, on a change of label
    PREFIX/ID/status    retained: "online" on connect; "offline" on a clean exit and as the last will
    PREFIX/ID/counters  retained: the pipeline's counters plus this publisher's, every --report-every s
and, with --mqtt-discovery, Home Assistant discovery configs (retained) under homeassistant/.

The broker going away never stops recognition: paho keeps every QoS-1 message until the broker
acknowledged it, in a queue bounded by --mqtt-queue; a message past the bound is dropped and
counted (and said once), and the client reconnects with back-off, then resends what is queued.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:  # paho is imported only when MQTT is used
    from collections.abc import Mapping

    from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
    from paho.mqtt.properties import Properties
    from paho.mqtt.reasoncodes import ReasonCode

DEFAULT_PREFIX = "har"
DEFAULT_QUEUE = 10_000  # messages; a window message is ~0.3 kB: at most ~3 MB, about 3 h of windows and counters
PASSWORD_ENV = "HAR_MQTT_PASSWORD"
DISCOVERY_PREFIX = "homeassistant"
TOPIC_KINDS = ("window", "state", "status", "counters")
MESSAGE_KINDS = TOPIC_KINDS + ("discovery",)
FLUSH_TIMEOUT_S = 5.0  # on exit, how long to wait for the broker to acknowledge what is queued
_DEVICE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


class MqttError(ValueError):
    """A bad --mqtt option (URL, credentials, CA file, device id); the CLI prints it."""


@dataclass(frozen=True)
class Broker:
    """Where to connect, and as whom."""

    url: str  # without the password, for messages
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None


def parse_broker(url: str, ca_file: str | None = None, password_file: str | None = None,
                 env: Mapping[str, str] | None = None, warn: Callable[[str], None] | None = None) -> Broker:
    """mqtt://[user[:pass]@]host[:port] or mqtts://...; the password comes from the URL, else
    password_file, else $HAR_MQTT_PASSWORD (a password on the command line is visible in `ps`)."""
    environ: Mapping[str, str] = os.environ if env is None else env
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise MqttError(f"--mqtt {url!r}: use mqtt://[user@]host[:port] or mqtts://[user@]host[:port]")
    try:
        port = parts.port
    except ValueError:
        raise MqttError(f"--mqtt {url!r}: the port is not a number from 1 to 65535") from None
    if not parts.hostname:
        raise MqttError(f"--mqtt {url!r}: no host; use mqtt://host[:port]")
    if parts.path not in ("", "/") or parts.query:
        raise MqttError(f"--mqtt {url!r}: a broker URL has no path or query; the topics come from --mqtt-prefix")
    tls = parts.scheme == "mqtts"
    if ca_file is not None:
        if not tls:
            raise MqttError(f"--mqtt-ca {ca_file} needs an mqtts:// broker URL (TLS); {url!r} is plain MQTT")
        if not Path(ca_file).is_file():
            what = "a folder" if Path(ca_file).is_dir() else "no such file"
            raise MqttError(f"--mqtt-ca {ca_file}: {what}; give the PEM file of the CA that signed the broker's "
                            "certificate")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if password is not None and warn is not None:
        warn(f"warning: the MQTT password in --mqtt is visible to every user of this machine (ps); "
             f"prefer --mqtt-password-file FILE or ${PASSWORD_ENV}")
    if password is None and password_file:
        try:
            password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise MqttError(f"--mqtt-password-file {password_file}: cannot read it "
                            f"({getattr(exc, 'strerror', None) or exc}); give a readable file holding the password") from None
    if password is None and environ.get(PASSWORD_ENV):
        password = environ[PASSWORD_ENV]
    if password is not None and username is None:
        raise MqttError(f"a password was given but {url!r} names no user; use mqtt://USER@host")
    netloc = (f"{username}@" if username else "") + parts.hostname + (f":{port}" if port else "")
    return Broker(f"{parts.scheme}://{netloc}", parts.hostname, port or (8883 if tls else 1883), tls,
                  username, password, ca_file)


def check_device_id(device_id: str) -> str:
    if not _DEVICE_ID.match(device_id):
        raise MqttError(f"--device-id {device_id!r}: use 1 to 64 letters, digits, '-' or '_' (it is one topic level)")
    return device_id


def check_prefix(prefix: str) -> str:
    if not _PREFIX.match(prefix):
        raise MqttError(f"--mqtt-prefix {prefix!r}: use topic levels of letters, digits, '-' or '_' separated "
                        "by '/', without wildcards or a leading or trailing '/'")
    return prefix


def default_device_id() -> str:
    """The host name, made a valid topic level (one Pi per wearer)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:64] or "wearer"


def topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix}/{device_id}/{kind}"


def add_broker_arguments(g: argparse._ActionsContainer) -> None:
    """Where the broker is and how to log in: shared by the publisher and `har-edge monitor`."""
    g.add_argument("--mqtt-prefix", default=DEFAULT_PREFIX, metavar="PREFIX",
                   help=f"first topic level(s) (default {DEFAULT_PREFIX}: topics {DEFAULT_PREFIX}/ID/window ...)")
    g.add_argument("--mqtt-ca", metavar="FILE", help="CA certificate (PEM) of an mqtts:// broker (default: the system's CAs)")
    g.add_argument("--mqtt-password-file", metavar="FILE",
                   help=f"read the MQTT password from FILE (else ${PASSWORD_ENV}); keeps it off the command line")


def add_mqtt_arguments(parser: argparse.ArgumentParser) -> None:
    """The publisher's options (run, replay, record)."""
    g = parser.add_argument_group("MQTT (docs/mqtt.md)")
    g.add_argument("--mqtt", metavar="URL", help="publish every window to this broker: mqtt://[user@]host[:port] "
                                                 "or mqtts://... (password: --mqtt-password-file or $" + PASSWORD_ENV + ")")
    g.add_argument("--device-id", metavar="ID", help="this wearer's topic level (default: the host name)")
    add_broker_arguments(g)
    g.add_argument("--mqtt-queue", type=int, default=DEFAULT_QUEUE, metavar="N",
                   help=f"messages kept while the broker is away (default {DEFAULT_QUEUE}); past it they are dropped and counted")
    g.add_argument("--mqtt-discovery", nargs="?", const=DISCOVERY_PREFIX, metavar="PREFIX",
                   help=f"publish Home Assistant discovery configs (discovery prefix, default {DISCOVERY_PREFIX})")


def reason_text(reason_code: ReasonCode) -> str:
    name: str = getattr(reason_code, "getName", lambda: str(reason_code))()
    # MQTT 3.1.1 has no reason on the wire: a broker that shuts down (even cleanly) or a network that goes
    # away just closes the socket, which paho names "Unspecified error". Say what it means.
    if name == "Unspecified error":
        return "the connection closed: the broker stopped or restarted, or the network went away"
    return name


def new_client(broker: Broker, client_id: str = "", **kwargs: Any) -> Client:
    """A paho client with the broker's credentials and TLS set up (raises MqttError on a bad CA file)."""
    import ssl

    try:
        import paho.mqtt.client as paho
    except ImportError:
        raise MqttError("MQTT needs paho-mqtt: pip install 'paho-mqtt>=2.0' (it is in har-edge[edge])") from None
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id, **kwargs)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        try:
            client.tls_set(ca_certs=broker.ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise MqttError(f"--mqtt-ca {broker.ca_file}: not a usable CA certificate ({exc}); give a PEM file") from None
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


class ConnectionReporter:
    """One clear line per change of the connection (refused, unreachable, lost, back), not one per retry."""

    def __init__(self, broker: Broker, notify: Callable[[str], None], what: str):
        self.broker, self.notify, self.what = broker, notify, what
        self.connects = 0
        self.disconnects = 0
        self.connected = False
        self.answered = False  # the first connection attempt has ended (accepted, refused or failed)
        self._last_problem: str | None = None
        self._lost_at: float | None = None

    def _problem(self, text: str) -> None:
        if text != self._last_problem:
            self._last_problem = text
            self.notify(text)

    def on_connected(self, reason_code: ReasonCode, what_now: str) -> bool:
        """CONNACK: True when accepted."""
        self.answered = True
        if reason_code.is_failure:
            hint = ""
            if reason_code in (4, 5, 134, 135):  # bad user name or password / not authorized (v3.1.1 and v5)
                hint = (f"; check the user in --mqtt and the password (--mqtt-password-file or ${PASSWORD_ENV}) "
                        "and the broker's ACL")
            self._problem(f"warning: the MQTT broker {self.broker.url} refused the connection "
                          f"({reason_text(reason_code)}){hint}; {self.what}, retrying with back-off")
            return False
        self.connects += 1
        self.connected = True
        self._last_problem = None
        if self._lost_at is not None:
            self.notify(f"MQTT broker {self.broker.url} is back after {time.monotonic() - self._lost_at:.1f} s; {what_now}")
            self._lost_at = None
        else:
            self.notify(f"connected to the MQTT broker {self.broker.url}; {what_now}")
        return True

    def on_connect_failed(self) -> None:
        self.answered = True
        self._problem(f"warning: cannot connect to the MQTT broker {self.broker.url} (nothing listening, "
                      f"unreachable, unknown host or a TLS failure); {self.what}, retrying with back-off")

    def on_disconnected(self, reason_code: ReasonCode, expected: bool) -> None:
        if not self.connected:
            return
        self.connected = False
        self.disconnects += 1
        if not expected:
            self._lost_at = time.monotonic()
            self._problem(f"warning: lost the MQTT broker {self.broker.url} ({reason_text(reason_code)}); "
                          f"{self.what}, reconnecting with back-off")


class MqttSink:
    """A Sink (edge/sinks.py) that publishes each window result, the label state, the status and
    the counters. emit() never blocks on the network: paho's thread does the I/O."""

    def __init__(self, broker: Broker, device_id: str, prefix: str = DEFAULT_PREFIX, queue_bound: int = DEFAULT_QUEUE,
                 discovery_prefix: str | None = None, notify: Callable[[str], None] = print,
                 flush_timeout_s: float = FLUSH_TIMEOUT_S):
        if queue_bound < 1:
            raise MqttError(f"--mqtt-queue {queue_bound}: must be at least 1")
        self.broker = broker
        self.device_id = check_device_id(device_id)
        self.prefix = check_prefix(prefix)
        self.queue_bound = queue_bound
        self.discovery_prefix = check_prefix(discovery_prefix) if discovery_prefix else None
        self.notify = notify
        self.flush_timeout_s = flush_timeout_s
        self.topics = {kind: topic(prefix, device_id, kind) for kind in TOPIC_KINDS}
        self._lock = threading.Lock()  # the counters (paho's thread counts the acknowledgements)
        # Messages are handed to paho only once it is connected; before that (and after a loss is noticed)
        # they wait here, in order, and _on_connect hands them over first. paho 2.2 keeps its own queue while
        # offline but, on reconnecting, resets its in-flight count to 0 before the CONNACK: a message
        # published during the handshake was sent at once, ahead of the whole backlog (a TLS connection's
        # first windows reached subscribers out of order). `_order` keeps a publish and the hand-over apart.
        self._order = threading.RLock()
        self._online = False
        self._backlog: list[tuple[str, str, str, bool]] = []  # (kind, topic, payload, retain), oldest first
        self.published = dict.fromkeys(MESSAGE_KINDS, 0)  # accepted into the queue, by topic kind
        self.dropped = dict.fromkeys(MESSAGE_KINDS, 0)  # past the queue bound
        self.delivered = 0  # acknowledged by the broker (PUBACK)
        self._state: dict[str, Any] | None = None
        self._closing = False
        self.connection = ConnectionReporter(
            broker, notify, f"recognition goes on and up to {queue_bound} messages are queued")
        self.client = new_client(broker, client_id=f"har-edge-{device_id}")
        self.client.max_queued_messages_set(queue_bound)
        self.client.will_set(self.topics["status"], "offline", qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = lambda client, userdata: self.connection.on_connect_failed()
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.connect_async(broker.host, broker.port, keepalive=30)
        self.client.loop_start()

    # -- paho's thread ---------------------------------------------------------------------------
    def _on_connect(self, client: Client, userdata: object, flags: ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        queued = self.queued
        sending = f"; {queued} queued messages are sent first" if queued else ""
        if not self.connection.on_connected(reason_code, f"publishing to {self.prefix}/{self.device_id}/...{sending}"):
            return
        with self._order:
            self._online = True
            # Retained topics are re-published on every connect: a broker without persistence restarts empty.
            self._publish("status", "offline" if self._closing else "online", retain=True)
            if self._state is not None:
                self._publish("state", json.dumps(self._state), retain=True)
            if self.discovery_prefix:
                for config_topic, config in discovery_configs(self.discovery_prefix, self.prefix, self.device_id):
                    self._publish("discovery", json.dumps(config), retain=True, to=config_topic)
            backlog, self._backlog = self._backlog, []
            for kind, to, payload, retain in backlog:  # accepted (and counted) when they were queued
                self._hand_to_paho(kind, to, payload, retain, counted=True)

    def _on_disconnect(self, client: Client, userdata: object, flags: DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self._online = False  # (no lock: paho may hold its own while calling this; a bool is set atomically)
        self.connection.on_disconnected(reason_code, expected=self._closing)

    def _on_publish(self, client: Client, userdata: object, mid: int, reason_code: ReasonCode,
                    properties: Properties) -> None:
        with self._lock:
            self.delivered += 1

    # -- the main loop's thread ----------------------------------------------------------------
    def _publish(self, kind: str, payload: str, retain: bool = False, to: str | None = None) -> None:
        """Publish now when connected, else keep it in the backlog (both count against the queue bound)."""
        to = to or self.topics[kind]
        with self._order:  # re-entered by _on_connect's own publishes (an RLock)
            if self._online:
                self._hand_to_paho(kind, to, payload, retain)
                return
            with self._lock:
                full = sum(self.published.values()) - self.delivered >= self.queue_bound
                if not full:
                    self._backlog.append((kind, to, payload, retain))
                    self.published[kind] += 1
        if full:
            self._count_drop(kind)

    def _hand_to_paho(self, kind: str, to: str, payload: str, retain: bool, counted: bool = False) -> None:
        import paho.mqtt.client as paho

        info = self.client.publish(to, payload, qos=1, retain=retain)
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            if counted:
                with self._lock:
                    self.published[kind] -= 1
            self._count_drop(kind)
        elif not counted:
            with self._lock:
                self.published[kind] += 1

    def _count_drop(self, kind: str) -> None:
        with self._lock:
            self.dropped[kind] += 1
            first = sum(self.dropped.values()) == 1
        if first:
            self.notify(f"warning: the MQTT queue is full ({self.queue_bound} messages unacknowledged by "
                        f"{self.broker.url}); further messages are dropped and counted until it drains")

    @property
    def queued(self) -> int:
        """Accepted but not yet acknowledged by the broker."""
        with self._lock:
            return sum(self.published.values()) - self.delivered

    def rehearse(self, result: dict[str, Any]) -> None:
        """A live rehearsal's throwaway result (edge/loop.py): encoded as a window message would be, not sent."""
        from edge.sinks import result_json

        result_json(result)

    def emit(self, result: dict[str, Any]) -> None:
        from edge.sinks import result_json

        self._publish("window", result_json(result))
        if self._state is None or self._state["label"] != result["label"]:
            self._state = {"label": result["label"], "confidence": result["confidence"], "since": result["t"],
                           "sample_end": result["sample_end"]}
            self._publish("state", json.dumps(self._state), retain=True)

    def counters(self, counters: dict[str, Any]) -> None:
        """The pipeline's counters (runtime.run_loop calls this every --report-every s and at the end)."""
        self._publish("counters", json.dumps({**counters, "mqtt": self.stats(), "t": time.time()}), retain=True)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            published, dropped = dict(self.published), dict(self.dropped)
            delivered = self.delivered
        return {"connected": self.connection.connected, "connects": self.connection.connects,
                "disconnects": self.connection.disconnects, "queue_bound": self.queue_bound,
                "queued": sum(published.values()) - delivered, "delivered": delivered,
                "published": published, "dropped": dropped}

    def close(self) -> None:
        """Status offline (retained), wait up to flush_timeout_s for the broker to acknowledge what
        is queued, disconnect, and say what was not delivered."""
        self._closing = True
        self._publish("status", "offline", retain=True)
        deadline = time.monotonic() + self.flush_timeout_s
        # A short run (a replay) can end before the first connection is up (a TLS handshake): wait for it too.
        while self.queued and (self.connection.connected or not self.connection.answered) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        self.client.disconnect()
        self.client.loop_stop()
        stats = self.stats()
        line = (f"MQTT: {stats['published']['window']} window messages queued for {self.broker.url}, "
                f"{stats['delivered']} messages acknowledged")
        lost = stats["queued"] + sum(stats["dropped"].values())
        if lost:
            line = (f"warning: {line}; NOT delivered: {stats['queued']} still queued at exit, "
                    f"{stats['dropped']['window']} window messages dropped past the queue bound of {self.queue_bound}")
        self.notify(line)


def discovery_configs(discovery_prefix: str, prefix: str, device_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery: the wearer becomes a device with an activity and a confidence sensor."""
    node = f"{prefix.replace('/', '_')}_{device_id}"
    state, status = topic(prefix, device_id, "state"), topic(prefix, device_id, "status")
    device = {"identifiers": [node], "name": f"HAR wearer {device_id}", "model": "har-edge", "manufacturer": "har-edge"}
    common = {"state_topic": state, "availability_topic": status, "payload_available": "online",
              "payload_not_available": "offline", "device": device}
    activity = {**common, "name": "Activity", "unique_id": f"{node}_activity", "icon": "mdi:run",
                "value_template": "{{ value_json.label }}", "json_attributes_topic": state}
    confidence = {**common, "name": "Activity confidence", "unique_id": f"{node}_confidence",
                  "value_template": "{{ value_json.confidence }}", "state_class": "measurement"}
    return [(f"{discovery_prefix}/sensor/{node}/activity/config", activity),
            (f"{discovery_prefix}/sensor/{node}/confidence/config", confidence)]


def mqtt_sink(args: argparse.Namespace, notify: Callable[[str], None]) -> MqttSink | None:
    """The sink for `--mqtt URL`, or None without it (raises MqttError on bad options)."""
    if not getattr(args, "mqtt", None):
        return None
    broker = parse_broker(args.mqtt, args.mqtt_ca, args.mqtt_password_file, warn=notify)
    return MqttSink(broker, args.device_id or default_device_id(), args.mqtt_prefix, args.mqtt_queue,
                    args.mqtt_discovery, notify)
