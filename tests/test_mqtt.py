"""MQTT end to end with real components on loopback: a real Mosquitto broker, real HAPT data
streamed through the virtual device into `har-edge run --mqtt`, an independent paho subscriber.

The window messages must be exactly the --jsonl lines (same objects, same sample_end set), across
a broker restart; credentials and the ACL are the broker's own; an unreachable broker or a wrong
password never stops recognition, and what was not delivered is counted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from firmware_bridge.recording import read_recording

from edge.cli import main

from helpers import REPO, excerpt, expected_windows, jsonl_count, read_jsonl
from services import Mosquitto, Output, Subscriber, free_port, har_edge, need, signal_until_exit, stop, wait_until

SPEED = 20.0  # stream seconds per wall second


@pytest.fixture
def broker(tmp_path):
    server = Mosquitto(tmp_path / "broker").start()
    yield server
    server.stop()


def stream_live(recording: Path, tmp_path: Path, options: list, during=None, env=None) -> tuple[list[dict], str]:
    """`har-edge run` on a virtual device playing `recording` once; returns the JSONL and stderr.
    during(jsonl_path) runs while it streams (a broker restart)."""
    from firmware_bridge.simulate import VirtualDevice

    out = tmp_path / "live.jsonl"
    n = len(read_recording(recording))
    with VirtualDevice(recording, speed=SPEED, link=tmp_path / "imu") as device:
        proc, err = har_edge("run", "--port", tmp_path / "imu", "--jsonl", out, "--quiet", "--report-every", "1",
                             *options, env=env)
        if during is not None:
            during(out)
        wait_until(lambda: device.finished and jsonl_count(out) == expected_windows(n),
                   f"every window of the stream in {out} (har-edge said: {err.text[-2000:]})", 120)
        text = stop(proc, err)
    return read_jsonl(out), text


def window_messages(subscriber: Subscriber, topic: str) -> list[dict]:
    return [json.loads(payload) for payload, _ in subscriber.on(topic)]


@pytest.mark.slow
def test_every_window_reaches_a_subscriber_through_a_broker_restart(broker, bundle_dir, hapt_recording, tmp_path):
    recording = excerpt(hapt_recording, tmp_path, 9000)  # 3 min of real motion, 139 windows
    # A persistent session: the broker keeps the subscriber's messages while it reconnects after the restart.
    subscriber = Subscriber(broker.port, ["har/wearer1/#"], client_id="test-subscriber", persistent=True).wait_subscribed()

    def restart_broker_mid_stream(out: Path):
        wait_until(lambda: jsonl_count(out) >= 30, "30 windows before the broker restart", 120)
        broker.stop()
        down_at = jsonl_count(out)
        wait_until(lambda: jsonl_count(out) >= down_at + 15, "recognition going on without the broker", 120)
        broker.start()

    lines, stderr = stream_live(recording, tmp_path, ["--bundle", bundle_dir, "--mqtt", broker.url,
                                                      "--device-id", "wearer1"], during=restart_broker_mid_stream)
    wait_until(lambda: any(p == b"offline" for p, _ in subscriber.on("har/wearer1/status")),
               "the 'offline' status after the clean exit")
    subscriber.close()
    assert "lost the MQTT broker" in stderr and "is back after" in stderr, stderr
    assert "broker stopped or restarted" in stderr and "Unspecified error" not in stderr  # paho's name said plainly
    # One message per line, though the paho thread and the main thread both write to stderr.
    assert all(line.startswith("har-edge") for line in stderr.splitlines() if line), stderr
    published = window_messages(subscriber, "har/wearer1/window")
    # QoS 1 is at least once: a message in flight at the restart may come twice, never not at all.
    by_end = {m["sample_end"]: m for m in published}
    assert sorted(by_end) == [line["sample_end"] for line in lines]
    assert [by_end[line["sample_end"]] for line in lines] == lines  # the same objects as the JSONL
    counters = json.loads(subscriber.on("har/wearer1/counters")[-1][0])
    assert counters["windows"] == len(lines)
    assert counters["mqtt"]["dropped"]["window"] == 0 and counters["mqtt"]["disconnects"] >= 1
    # The retained topics, as a newcomer sees them after the run.
    late = Subscriber(broker.port, ["har/wearer1/state", "har/wearer1/status"]).wait_subscribed()
    wait_until(lambda: late.on("har/wearer1/state") and late.on("har/wearer1/status"), "the retained state and status")
    late.close()
    state, retained = late.on("har/wearer1/state")[0]
    state = json.loads(state)
    last_change = max(i for i, line in enumerate(lines) if i == 0 or line["label"] != lines[i - 1]["label"])
    assert retained and state == {"label": lines[-1]["label"], "confidence": lines[last_change]["confidence"],
                                  "since": lines[last_change]["t"], "sample_end": lines[last_change]["sample_end"]}
    assert late.on("har/wearer1/status")[0] == (b"offline", True)


@pytest.mark.slow
def test_wrong_password_is_refused_and_a_device_cannot_publish_outside_its_topics(bundle_dir, hapt_recording, tmp_path):
    passwd = need("mosquitto_passwd", "mosquitto")
    root = tmp_path / "broker"
    root.mkdir()
    users = {"wearer1": "s3cret-wearer1", "monitor": "s3cret-monitor"}
    password_file = root / "passwd"
    for i, (user, password) in enumerate(users.items()):
        subprocess.run([passwd, "-b", *(["-c"] if i == 0 else []), str(password_file), user, password], check=True)
    acl = root / "acl"
    acl.write_text("user monitor\ntopic read har/#\n\npattern write har/%u/#\n")
    broker = Mosquitto(root, extra=f"password_file {password_file}\nacl_file {acl}\n", anonymous=False).start()
    try:
        import paho.mqtt.client as paho

        # An independent client with a wrong password: CONNACK refuses it.
        intruder = Subscriber(broker.port, ["har/#"], username="monitor", password="guess")
        refusal = intruder.refused.get(timeout=30)
        intruder.close()
        assert refusal.is_failure and refusal.getName() in ("Bad user name or password", "Not authorized")

        monitor = Subscriber(broker.port, ["har/#"], username="monitor", password=users["monitor"]).wait_subscribed()
        # The device's own credentials (MQTT v5 for the PUBACK reason codes): outside har/wearer1/# is denied.
        device = paho.Client(paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        device.username_pw_set("wearer1", users["wearer1"])
        acks = {}
        device.on_publish = lambda client, userdata, mid, reason_code, properties: acks.__setitem__(mid, reason_code)
        device.connect("127.0.0.1", broker.port)
        device.loop_start()
        denied = device.publish("har/wearer2/window", b'{"forged": true}', qos=1)
        allowed = device.publish("har/wearer1/window", b'{"own": true}', qos=1)
        wait_until(lambda: denied.mid in acks and allowed.mid in acks and monitor.on("har/wearer1/window"),
                   "the broker's answers to both publishes")
        device.disconnect()
        device.loop_stop()
        assert acks[denied.mid].getName() == "Not authorized" and not acks[allowed.mid].is_failure
        assert monitor.on("har/wearer2/window") == []  # after the allowed one arrived: the denied one never will

        # har-edge with the right password from a file: every window reaches the monitor user.
        recording = excerpt(hapt_recording, tmp_path, 3000)
        (tmp_path / "password").write_text(users["wearer1"] + "\n")
        rc = main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(tmp_path / "r.jsonl"),
                   "--mqtt", f"mqtt://wearer1@127.0.0.1:{broker.port}", "--device-id", "wearer1",
                   "--mqtt-password-file", str(tmp_path / "password")])
        assert rc == 0
        lines = read_jsonl(tmp_path / "r.jsonl")
        wait_until(lambda: len(window_messages(monitor, "har/wearer1/window")) == len(lines) + 1,
                   "every replayed window at the monitor")
        assert window_messages(monitor, "har/wearer1/window")[1:] == lines
        monitor.close()

        # A wrong password from the environment: one clear line, recognition goes on, nothing is lost silently.
        lines, stderr = stream_live(recording, tmp_path, ["--bundle", bundle_dir, "--device-id", "wearer1",
                                                          "--mqtt", f"mqtt://wearer1@127.0.0.1:{broker.port}"],
                                    env={"HAR_MQTT_PASSWORD": "wrong"})
    finally:
        broker.stop()
    assert len(lines) == expected_windows(3000)
    refused = [line for line in stderr.splitlines() if "refused the connection" in line]
    assert len(refused) == 1 and "password" in refused[0] and "recognition goes on" in refused[0], stderr
    assert "NOT delivered" in stderr and f"{len(lines)} window messages queued" in stderr, stderr


@pytest.mark.slow
def test_an_unreachable_broker_never_stops_recognition_and_drops_are_counted(bundle_dir, hapt_recording, tmp_path):
    recording = excerpt(hapt_recording, tmp_path, 3000)
    port = free_port()  # nothing listens there
    lines, stderr = stream_live(recording, tmp_path, ["--bundle", bundle_dir, "--device-id", "wearer1",
                                                      "--mqtt", f"mqtt://127.0.0.1:{port}", "--mqtt-queue", "10"])
    assert len(lines) == expected_windows(3000)  # recognition unaffected
    cannot = [line for line in stderr.splitlines() if "cannot connect to the MQTT broker" in line]
    assert len(cannot) == 1 and "recognition goes on" in cannot[0], stderr
    summary = next(line for line in stderr.splitlines() if "NOT delivered" in line)
    queued = int(summary.split("MQTT: ")[1].split()[0])
    still, dropped = int(summary.split("NOT delivered: ")[1].split()[0]), int(summary.split("exit, ")[1].split()[0])
    assert still == 10  # the bound, full of what never left
    assert queued + dropped == len(lines)  # every window is either queued or counted as dropped


@pytest.mark.slow
def test_prefix_discovery_and_retained_topics(broker, bundle_dir, hapt_recording, tmp_path):
    recording = excerpt(hapt_recording, tmp_path, 3000)
    rc = main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(tmp_path / "r.jsonl"),
               "--mqtt", broker.url, "--device-id", "w-7", "--mqtt-prefix", "site/ward2", "--mqtt-discovery"])
    assert rc == 0
    lines = read_jsonl(tmp_path / "r.jsonl")
    config_topics = ["homeassistant/sensor/site_ward2_w-7/activity/config",
                     "homeassistant/sensor/site_ward2_w-7/confidence/config"]
    late = Subscriber(broker.port, ["site/ward2/w-7/#", "homeassistant/#"]).wait_subscribed()
    wait_until(lambda: all(late.on(t) for t in config_topics + ["site/ward2/w-7/state", "site/ward2/w-7/counters"]),
               "the retained discovery configs, state and counters")
    late.close()
    activity = json.loads(late.on(config_topics[0])[0][0])
    assert activity["state_topic"] == "site/ward2/w-7/state" and activity["availability_topic"] == "site/ward2/w-7/status"
    assert activity["value_template"] == "{{ value_json.label }}" and activity["unique_id"] == "site_ward2_w-7_activity"
    assert json.loads(late.on("site/ward2/w-7/state")[0][0])["label"] == lines[-1]["label"]
    counters = json.loads(late.on("site/ward2/w-7/counters")[0][0])
    assert counters["windows"] == len(lines) and counters["mqtt"]["published"]["window"] == len(lines)
    assert late.on("site/ward2/w-7/window") == []  # windows are not retained


@pytest.mark.slow
def test_monitor_shows_every_device_and_counts_every_window(broker, bundle_dir, hapt_recording, tmp_path):
    recording = excerpt(hapt_recording, tmp_path, 3000)
    stats = tmp_path / "stats.json"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "monitor", "--mqtt", broker.url, "--stats-json", stats,
                             "--web", "127.0.0.1:0"], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = Output(proc.stdout), Output(proc.stderr)
    err.wait_for("subscribed to har/+/")
    state_url = err.wait_for("live page at").split("live page at ")[1].strip() + "state.json"
    jsonl = {}
    for device in ("bed-1", "bed-2"):
        jsonl[device] = tmp_path / f"{device}.jsonl"
        assert main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(jsonl[device]),
                     "--mqtt", broker.url, "--device-id", device]) == 0
    # Each publisher says offline last, after its windows: when the monitor shows both offline, it has them all.
    def monitor_view():
        with urllib.request.urlopen(state_url, timeout=30) as response:
            return {view["device"]: view["status"] for view in json.load(response)}
    wait_until(lambda: monitor_view() == {"bed-1": "offline", "bed-2": "offline"}, "both wearers offline at the monitor")
    # An impatient Ctrl-C: signals until it exits. The stats file is still written (the web server's close
    # takes about half a second: a second signal there used to end the monitor without its stats).
    signal_until_exit(proc, signal.SIGINT)
    table, log = out.finish(), err.finish()
    assert proc.returncode == 0 and "Traceback" not in log, log
    result = json.loads(stats.read_text())
    for device, path in jsonl.items():
        lines = read_jsonl(path)
        seen = result["devices"][device]
        assert [row[0] for row in seen["history"]] == [line["sample_end"] for line in lines], (result, log)
        assert seen["window_messages"] == len(lines) and seen["duplicates"] == 0
        row = next(line for line in table.splitlines() if line.startswith(device))
        assert lines[-1]["label"] in row and "offline" in row and f" {len(lines)} " in row


def test_the_monitor_says_when_a_wearers_board_is_unplugged(bundle_dir):
    from edge.model import load_model
    from edge.monitor import faults
    from edge.pipeline import Pipeline
    from edge.sources import LinkEvent

    pipeline = Pipeline(load_model(bundle_dir), notify=lambda message: None)
    pipeline.process(LinkEvent("connected", "/dev/ttyACM0"))
    assert faults(pipeline.counters()) == "none"
    pipeline.process(LinkEvent("lost", "/dev/ttyACM0", detail="[Errno 5] Input/output error"))
    assert faults(pipeline.counters()).startswith("UNPLUGGED")  # the counters it publishes while waiting
    pipeline.process(LinkEvent("connected", "/dev/ttyACM0", outage_s=2.0))
    shown = faults(pipeline.counters())
    assert "UNPLUGGED" not in shown and "reconnects 1" in shown


def make_certificates(root: Path) -> dict:
    """A private CA and a broker certificate for localhost / 127.0.0.1, signed by it (openssl)."""
    openssl = need("openssl", "openssl")
    root.mkdir(parents=True, exist_ok=True)
    files = {name: root / f"{name}.pem" for name in ("ca", "ca_key", "cert", "key", "csr")}
    (root / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for command in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", files["ca_key"], "-out", files["ca"],
                     "-days", "2", "-subj", "/CN=har-edge test CA"],
                    ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", files["key"], "-out", files["csr"],
                     "-subj", "/CN=localhost"],
                    ["x509", "-req", "-in", files["csr"], "-CA", files["ca"], "-CAkey", files["ca_key"],
                     "-CAcreateserial", "-out", files["cert"], "-days", "2", "-extfile", root / "san.ext"]):
        subprocess.run([openssl, *map(str, command)], check=True, capture_output=True)
    return files


@pytest.mark.slow
def test_mqtts_with_a_private_ca(bundle_dir, hapt_recording, tmp_path, capsys):
    certs = make_certificates(tmp_path / "certs")
    broker = Mosquitto(tmp_path / "broker", extra=f"cafile {certs['ca']}\ncertfile {certs['cert']}\n"
                                                  f"keyfile {certs['key']}\n").start()
    try:
        subscriber = Subscriber(broker.port, ["har/#"], ca_file=str(certs["ca"])).wait_subscribed()
        recording = excerpt(hapt_recording, tmp_path, 3000)
        rc = main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(tmp_path / "r.jsonl"),
                   "--mqtt", f"mqtts://localhost:{broker.port}", "--mqtt-ca", str(certs["ca"]), "--device-id", "w1"])
        assert rc == 0, capsys.readouterr().err
        lines = read_jsonl(tmp_path / "r.jsonl")
        wait_until(lambda: len(subscriber.on("har/w1/window")) == len(lines), "every window over TLS")
        assert window_messages(subscriber, "har/w1/window") == lines
        subscriber.close()
        # The system's CAs do not know the private CA: the certificate is refused, nothing is sent in clear.
        rc = main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet",
                   "--mqtt", f"mqtts://localhost:{broker.port}", "--device-id", "w1"])
        err = capsys.readouterr().err
        assert rc == 0 and "NOT delivered" in err and "Traceback" not in err
    finally:
        broker.stop()


@pytest.mark.parametrize("options, words", [
    (["--mqtt", "http://broker"], "use mqtt://"),
    (["--mqtt", "mqtt://broker:99999"], "port is not a number"),
    (["--mqtt", "mqtt://"], "no host"),
    (["--mqtt", "mqtt://broker/topic"], "no path"),
    (["--mqtt", "mqtt://broker", "--mqtt-ca", "ca.pem"], "needs an mqtts://"),
    (["--mqtt", "mqtts://broker", "--mqtt-ca", "no-such-ca.pem"], "no such file"),
    (["--mqtt", "mqtts://broker", "--mqtt-ca", "."], ".: a folder; give the PEM file"),
    (["--mqtt", "mqtt://u@broker", "--mqtt-password-file", "no-such-file"], "cannot read it"),
    (["--mqtt", "mqtt://broker", "--device-id", "a/b"], "one topic level"),
    (["--mqtt", "mqtt://broker", "--mqtt-prefix", "har/#"], "without wildcards"),
    (["--mqtt", "mqtt://broker", "--mqtt-queue", "0"], "at least 1"),
])
def test_bad_mqtt_options_are_one_clear_line(bundle_dir, hapt_recording, monkeypatch, tmp_path, capsys, options, words):
    monkeypatch.chdir(tmp_path)
    rc = main(["replay", str(hapt_recording), "--bundle", str(bundle_dir), "--quiet", *options])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err
    assert [line for line in err.splitlines() if "error:" in line] == [line for line in err.splitlines()
                                                                       if line.startswith("har-edge replay: error:")]
