"""The live web page: served by `har-edge run --web` / `har-edge monitor --web`, loaded in a real
headless Chromium, whose page must show the labels of the JSONL; and the server's own rules
(loopback host names only, no external assets, server-sent events carrying each window)."""

from __future__ import annotations

import http.client
import json
import re
import subprocess
import sys

import pytest

from edge.cli import main
from edge.web import Fleet, LiveServer

from helpers import REPO, excerpt, expected_windows, jsonl_count, read_jsonl
from services import Chromium, Mosquitto, Output, har_edge, stop, wait_until

LAST_END = list(range(128, 3001, 64))[-1]  # the last window of the 3000-sample excerpt
SHOWN = """(() => [...document.querySelectorAll('.device')].map(n => ({
  device: n.dataset.device, end: n.dataset.sampleEnd === '' ? null : Number(n.dataset.sampleEnd),
  label: n.querySelector('.label').textContent, status: n.querySelector('.status').textContent,
  timeline: devices.get(n.dataset.device).timeline.length})))()"""


@pytest.fixture
def chromium(tmp_path):
    browser = Chromium(tmp_path / "chromium")
    yield browser
    browser.close()


@pytest.mark.slow
def test_the_page_shows_the_live_label_of_the_jsonl(chromium, bundle_dir, hapt_recording, tmp_path):
    from firmware_bridge.simulate import VirtualDevice

    recording = excerpt(hapt_recording, tmp_path, 3000)  # 1 min of real motion, 45 windows, streamed in 12 s
    out = tmp_path / "live.jsonl"
    seen: dict[int, str] = {}  # sample_end -> the label the page showed for it
    with VirtualDevice(recording, speed=5.0, link=tmp_path / "imu") as device:
        proc, err = har_edge("run", "--port", tmp_path / "imu", "--bundle", bundle_dir, "--jsonl", out, "--quiet",
                             "--report-every", "1", "--web", "127.0.0.1:0", "--device-id", "wearer1")
        url = re.search(r"live page at (http://\S+)", err.wait_for("live page at")).group(1)
        chromium.open(url)

        def page_caught_up():
            for shown in chromium.evaluate(SHOWN):
                if shown["end"] is not None:
                    seen[shown["end"]] = shown["label"]
            return device.finished and jsonl_count(out) == expected_windows(3000) and max(seen, default=0) == LAST_END
        wait_until(page_caught_up, f"the page to show the last window (har-edge said: {err.text[-1500:]})", 120, 0.1)
        final = chromium.evaluate(SHOWN)
        table = "[...document.querySelectorAll('.counters tr')].map(tr => [tr.cells[0].textContent, tr.cells[1].textContent])"
        assert dict(chromium.evaluate(table))["board"] == "connected"
        device.stop()  # unplugged: the page says so with the next counters (every second)
        wait_until(lambda: dict(chromium.evaluate(table))["board"] == "UNPLUGGED", "the page to say the board is gone")
        counters = dict(chromium.evaluate(table))
        stop(proc, err)
    by_end = {line["sample_end"]: line["label"] for line in read_jsonl(out)}
    assert len(seen) >= 2  # the page followed the stream, not only its end
    assert {end: by_end[end] for end in seen} == seen
    # The counters report of every second: the pipeline's fault counters, on the page.
    assert 0 < int(counters["windows"]) <= len(by_end) and counters["lost samples"] == "0"
    assert final == [{"device": "wearer1", "end": max(by_end), "label": by_end[max(by_end)], "status": "online",
                      "timeline": len(by_end)}]


@pytest.mark.slow
def test_the_fleet_page_of_the_monitor_shows_every_wearer(chromium, bundle_dir, hapt_recording, tmp_path):
    broker = Mosquitto(tmp_path / "broker").start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "monitor", "--mqtt", broker.url, "--web",
                                 "127.0.0.1:0", "--quiet"], cwd=REPO, text=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
        err = Output(proc.stderr)
        err.wait_for("subscribed to har/+/")
        chromium.open(re.search(r"live page at (http://\S+)", err.wait_for("live page at")).group(1))
        recording = excerpt(hapt_recording, tmp_path, 3000)
        last = {}
        for device in ("bed-1", "bed-2"):
            path = tmp_path / f"{device}.jsonl"
            assert main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(path),
                         "--mqtt", broker.url, "--device-id", device]) == 0
            last[device] = read_jsonl(path)[-1]
        expected = [{"device": d, "end": r["sample_end"], "label": r["label"], "status": "offline",
                     "timeline": expected_windows(3000)} for d, r in sorted(last.items())]
        wait_until(lambda: chromium.evaluate(SHOWN) == expected,
                   f"the fleet page to show both wearers' last windows, offline ({chromium.evaluate(SHOWN)})")
        stop(proc, err)
    finally:
        broker.stop()


@pytest.fixture
def server():
    live = LiveServer("127.0.0.1", 0, Fleet()).start()
    yield live
    live.close()


def get(server, path: str, host: str | None = None) -> http.client.HTTPResponse:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    conn.request("GET", path, headers={"Host": host} if host else {})
    return conn.getresponse()


def test_the_server_keeps_to_loopback_names_and_its_own_assets(server):
    page = get(server, "/")
    body = page.read().decode()
    assert page.status == 200 and "default-src 'none'" in page.getheader("Content-Security-Policy")
    assert not re.search(r"(src|href)=|https?://|@import|url\(", body)  # nothing loaded from anywhere
    # A page elsewhere that rebinds its DNS name to 127.0.0.1 sends its own name: refused.
    assert get(server, "/", host="attacker.example:8080").status == 403
    assert get(server, "/state.json", host="localhost:1").status == 200
    assert get(server, "/../etc/passwd").status == 404


def test_events_carry_a_snapshot_then_every_window(server):
    window = {"sample_end": 128, "label": "WALKING", "raw_label": "WALKING", "confidence": 0.9,
              "probs": {"WALKING": 0.9}, "t": 1000.0, "latency_ms": 1.0}
    server.fleet.apply("bed-1", "window", window)
    stream = get(server, "/events")
    assert stream.getheader("Content-Type") == "text/event-stream"

    def event():
        lines = []
        while True:
            line = stream.readline().decode().rstrip("\n")
            if not line and lines:
                return {k: v for k, _, v in (item.partition(": ") for item in lines)}
            if line and not line.startswith(("retry:", ":")):
                lines.append(line)

    snapshot = event()
    assert snapshot["event"] == "snapshot"
    assert [(d["device"], d["label"], d["timeline"]) for d in json.loads(snapshot["data"])] == [
        ("bed-1", "WALKING", [[1000.0, "WALKING"]])]
    server.fleet.apply("bed-1", "window", {**window, "sample_end": 192, "label": "SITTING", "t": 1001.28})
    update = event()
    data = json.loads(update["data"])
    assert update["event"] == "update" and data["point"] == [1001.28, "SITTING"]
    assert data["view"]["label"] == "SITTING" and data["view"]["since"] == 1001.28 and data["view"]["windows"] == 2
    assert json.loads(get(server, "/state.json").read())[0]["sample_end"] == 192


@pytest.mark.parametrize("address, words", [("127.0.0.1:http", "HOST:PORT"), ("127.0.0.1:70000", "HOST:PORT"),
                                            ("192.0.2.1:8080", "cannot serve there")])
def test_bad_web_addresses_are_one_clear_line(bundle_dir, hapt_recording, capsys, address, words):
    rc = main(["replay", str(hapt_recording), "--bundle", str(bundle_dir), "--quiet", "--web", address])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and "Traceback" not in err
