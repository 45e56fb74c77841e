"""The whole live path through a real pseudo-terminal: virtual device -> pty -> SerialSource
(pyserial, paced by the main loop) -> decoder -> gaps -> front-end -> model -> labels.

Every test compares the live labels with a replay of the same data: the recording minus the
samples the device lost (their stream positions kept), which is what the live path saw. With
faults injected, the counters must match what the device says it injected.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder, Sample
from firmware_bridge.simulate import Faults, VirtualDevice

from edge.loop import run_loop
from edge.pipeline import Pipeline
from edge.sinks import JsonlSink, MemorySink
from edge.sources import Backoff, SampleBlock, SerialSource

from helpers import build_standin_model, find_bundle, read_hapt_raw

pytestmark = pytest.mark.slow  # real pty streams, seconds each: `make test-fast` leaves these out

SPEED = 50.0  # stream seconds per wall second: 6000 samples (2 min) stream in 2.4 s
N_SAMPLES = 6000


@pytest.fixture(scope="module")
def model(hapt_user1_dir):
    """A real exported model (shipped, HAR_EDGE_TEST_BUNDLE, or the stored tiny bundle), else the stand-in."""
    from edge.model import load_model

    bundle = find_bundle()
    return build_standin_model(hapt_user1_dir) if bundle is None else load_model(bundle, "tflite", "int8")


@pytest.fixture(scope="module")
def samples(hapt_user1_dir) -> list[Sample]:
    raw = read_hapt_raw(hapt_user1_dir, n=N_SAMPLES)
    return [Sample(i, i * 20_000, *map(float, row)) for i, row in enumerate(raw)]


def replay_of(model, samples, lost=(), rate_hz=50.0):
    """What the pipeline gives for the samples that arrived (lost stream indices removed)."""
    lost = set(lost)
    kept = [s for i, s in enumerate(samples) if i not in lost]
    seq = np.array([s.seq % 65536 for s in kept], dtype=np.int64)
    t_us = np.array([round(i * 1e6 / rate_hz) for i, s in enumerate(samples) if i not in lost], dtype=np.int64)
    raw = np.array([s.values() for s in kept], dtype=np.float64)
    pipeline = Pipeline(model, notify=lambda m: None)
    results = pipeline.process(SampleBlock(seq, t_us, raw, 0.0))
    return pipeline, results


class TappedFrameDecoder(FrameDecoder):
    """FrameDecoder that remembers the seq of every sample it delivered."""

    def __init__(self):
        super().__init__()
        self.arrived = []
        self.per_read = []  # samples in each chunk of bytes that brought any

    def feed(self, data):
        frames = super().feed(data)
        self.arrived += [f.seq for f in frames if isinstance(f, Sample)]
        if any(isinstance(f, Sample) for f in frames):
            self.per_read.append(sum(isinstance(f, Sample) for f in frames))
        return frames


def live(model, device: VirtualDevice, text=False, messages=None, sink=None, **pipeline_options):
    """Run the pipeline on the device's port until the device has finished and the port is quiet."""
    device.start()
    source = SerialSource(device.port, backoff=Backoff(0.02, 2.0, 0.2))
    notes = messages if messages is not None else []
    pipeline = Pipeline(model, decoder=CsvLineDecoder() if text else TappedFrameDecoder(), notify=notes.append,
                        **pipeline_options)
    sink = sink if sink is not None else MemorySink()
    quiet_since = [None]
    # The due time of each prewarm the loop handed the source. Kept beside the pipeline, not on it: a rehearsal
    # copies the pipeline, and a port must not be copied with it.
    offered = live.prewarms_offered = []
    live.source = source

    class Watch:
        def __iter__(self):
            for item in source:
                idle = getattr(item, "kind", None) == "idle"
                quiet_since[0] = (quiet_since[0] or time.perf_counter()) if idle else None
                yield item

        def hold_until(self, due, prewarm=None):  # the main loop paces the reader, as it does the bare SerialSource
            source.hold_until(due, prewarm)
            if prewarm is not None:
                offered.append(due)

        def close(self):
            source.close()

    def stop():
        return device.finished and quiet_since[0] is not None and time.perf_counter() - quiet_since[0] > 0.3

    deadline = time.perf_counter() + 60
    try:
        report = run_loop(Watch(), pipeline, [sink], report_every_s=None, report=notes.append,
                          stop=lambda: stop() or time.perf_counter() > deadline)
    finally:
        device.stop()
    assert time.perf_counter() <= deadline, "the live run did not finish"
    return pipeline, sink.results, report


def strip(results):
    return [(r["sample_end"], r["label"], r["raw_label"], round(r["confidence"], 4)) for r in results]


def test_clean_stream_gives_the_same_labels_as_replay(model, samples, tmp_path):
    pipeline, results, _ = live(model, VirtualDevice(samples, speed=SPEED, link=tmp_path / "imu"))
    _, expected = replay_of(model, samples)
    assert len(results) == len(range(128, N_SAMPLES + 1, 64))
    assert strip(results) == strip(expected)
    c = pipeline.counters()
    assert c["decoder"]["crc_errors"] == 0 and c["gaps"]["lost_samples"] == 0 and c["link"]["connects"] == 1
    assert c["decoder"]["hellos"] >= 1


def test_at_real_time_the_port_is_read_in_batches_and_window_ends_as_they_come(model, samples, tmp_path):
    """At 50 Hz the reader sleeps until a window is nearly due and then takes what gathered in one read (a few
    reads per window instead of 64), while the frame that completes a window is read on its own: the same
    labels as a replay, from far fewer wake-ups."""
    n = 450  # 9 s at 50 Hz: windows end at 128, 192, ..., 448
    pipeline, results, _ = live(model, VirtualDevice(samples[:n], speed=1.0, link=tmp_path / "imu"))
    _, expected = replay_of(model, samples[:n])
    assert len(results) == 6 and strip(results) == strip(expected)
    per_read = pipeline.decoder.per_read
    assert sum(per_read) == n and len(per_read) <= n // 4  # batched: at most a quarter as many reads as frames
    ends_at = np.cumsum(per_read)  # samples delivered after each read
    completing = [per_read[int(np.searchsorted(ends_at, r["sample_end"]))] for r in results]  # read with its last sample
    assert np.median(completing) <= 2, (completing, per_read)
    # The loop handed the source a prewarm for each window but the first (then no sample yet to repeat) whose last
    # frame came on its own (read with the one before it, the window was complete before one could be offered), and
    # each was run just before its frame came, or not, because the frame was there already (the device ahead of the
    # estimate: a loaded host); the rehearsals changed no label (the replay above).
    source = live.source
    assert len(live.prewarms_offered) >= sum(c == 1 for c in completing[1:])
    assert source.prewarms_run + source.prewarms_frame_early == len(live.prewarms_offered)
    assert pipeline.timers.items["prewarm"] == source.prewarms_run >= 1


class RehearsedJsonlSink(JsonlSink):
    """The JSONL sink that counts the rehearsal results the loop hands it; its `results` are the lines it wrote."""

    def __init__(self, path):
        super().__init__(str(path))
        self.rehearsed = 0

    def rehearse(self, result):
        self.rehearsed += 1
        super().rehearse(result)

    @property
    def results(self):  # read after the loop has closed (flushed) the sink
        import json

        lines = [json.loads(line) for line in open(self.path, encoding="utf-8")]
        return [line for line in lines if "sample_end" in line]  # not the status lines ("connected")


def test_at_real_time_the_rehearsals_results_are_encoded_but_never_written(model, samples, tmp_path):
    """The loop gives a JSONL sink each rehearsal's throwaway result to encode (the way out warm too): the file
    has one line per window (beside its status lines), the replay's labels, and nothing of the rehearsals."""
    n = 450  # 9 s at 50 Hz: 6 windows
    sink = RehearsedJsonlSink(tmp_path / "labels.jsonl")
    pipeline, results, _ = live(model, VirtualDevice(samples[:n], speed=1.0, link=tmp_path / "imu"), sink=sink)
    _, expected = replay_of(model, samples[:n])
    assert len(results) == 6 and strip(results) == strip(expected)
    assert sink.rehearsed == pipeline.timers.items["prewarm"] >= 1  # one result per rehearsal, each encoded


def test_drops_corruption_duplicates_garbage_are_counted_and_survived(model, samples, tmp_path):
    device = VirtualDevice(samples, Faults(drop=0.01, corrupt=0.01, duplicate=0.01, garbage=0.01, seed=7), speed=SPEED)
    pipeline, results, _ = live(model, device)
    inj = device.injected
    assert inj.dropped > 20 and inj.corrupted > 20 and inj.duplicated > 20 and inj.garbage_bursts > 20
    c = pipeline.counters()
    dec, gaps = c["decoder"], c["gaps"]
    assert gaps["lost_samples"] == inj.dropped + inj.corrupted == len(inj.lost_indices)
    assert dec["duplicates"] + gaps["duplicates"] == inj.duplicated
    # A corrupted frame fails its CRC; a garbage burst is either malformed or, by chance, a CRC failure.
    assert dec["crc_errors"] >= inj.corrupted
    assert dec["crc_errors"] + dec["malformed"] == inj.corrupted + inj.garbage_bursts
    assert gaps["interpolated_samples"] + sum(0 for _ in ()) <= gaps["lost_samples"]
    _, expected = replay_of(model, samples, inj.lost_indices)
    assert strip(results) == strip(expected)


def test_unplug_reconnects_with_backoff_and_resets(model, samples, tmp_path):
    # Unplugged for 3 s of stream every 30 s; the device keeps sampling meanwhile (samples lost).
    device = VirtualDevice(samples, Faults(disconnect_every=30.0, disconnect_for=3.0), speed=SPEED, link=tmp_path / "imu")
    messages = []
    pipeline, results, _ = live(model, device, messages=messages)
    inj = device.injected
    assert inj.disconnects >= 2
    c = pipeline.counters()
    assert c["link"]["disconnects"] == c["link"]["reconnects"] == inj.disconnects
    assert c["gaps"]["outage_samples"] >= inj.lost_in_disconnect
    assert c["frontend_resets"] == inj.disconnects
    assert any("back after" in m for m in messages)
    # Frames still in flight when the port vanishes are lost with it (as with a real USB unplug;
    # how many depends on how far the reader was behind), so compare with what arrived.
    arrived = set(pipeline.decoder.arrived)
    lost = [i for i in range(N_SAMPLES) if i not in arrived]
    assert set(inj.lost_indices) <= set(lost)
    assert c["gaps"]["outage_samples"] + c["gaps"]["lost_samples"] == len(lost)
    # The same data replayed: the outages are long gaps there, with the same window restarts.
    _, expected = replay_of(model, samples, lost)
    assert strip(results) == strip(expected)


def test_invalid_values_and_an_off_rate_device(model, samples, tmp_path):
    bad = list(samples)
    bad[1000] = Sample(1000, 0, math.nan, *samples[1000].values()[1:])
    bad[2000] = Sample(2000, 0, 20.0, *samples[2000].values()[1:])  # 20 g: beyond the sensor
    for i in range(3000, 3020):  # 0.4 s of impossible gyro: a long gap
        bad[i] = Sample(i, 0, *samples[i].values()[:3], 50.0, 0.0, 0.0)
    messages = []
    # The device's clock runs 4% fast: 52 samples per device second.
    pipeline, results, _ = live(model, VirtualDevice(bad, speed=SPEED, rate_hz=52.0), messages=messages)
    c = pipeline.counters()
    assert c["gaps"]["invalid_samples"] == 22 and c["gaps"]["long_gaps"] == 1
    assert c["gaps"]["interpolated_samples"] == 2
    assert c["rate_warnings"] == 1 and c["rate_hz"] == pytest.approx(52.0, rel=1e-3)
    # Said once (its HELLO every 5 s says it again; the measured rate agrees), and every window is marked.
    assert [m for m in messages if "Hz" in m and "counters" not in m] == [
        "warning: the device announces 52 Hz but the model expects 50 Hz; labels are unreliable "
        "(windows are marked device_rate_hz)"]
    assert c["status"] == {"connected": 1, "rate_announced": 1}
    assert {r.get("device_rate_hz") for r in results} == {52.0}
    _, expected = replay_of(model, bad, rate_hz=52.0)
    assert strip(results) == strip(expected)
    assert results[0]["sample_end"] == 128 and any(r["sample_end"] == 3020 + 128 for r in results)


def test_text_mode_lines(model, samples):
    pipeline, results, _ = live(model, VirtualDevice(samples[:3000], speed=SPEED, text=True), text=True)
    _, expected = replay_of(model, samples[:3000])
    # Text carries 6 significant digits: the same windows, nearly always the same labels.
    assert [r["sample_end"] for r in results] == [r["sample_end"] for r in expected]
    agree = np.mean([a["raw_label"] == b["raw_label"] for a, b in zip(results, expected)])
    assert agree >= 0.95
    assert pipeline.counters()["decoder"]["bad_lines"] == 0


# -- the fault matrix: each fault a real board or user produces, said once, counted exactly -------------

NAN_SAMPLES = [Sample(i, i * 20_000, *([math.nan] * 6)) for i in range(1000)]
FIRST_512_FRAMES = 15  # 0x00 + HELLO (15 bytes), then 35-byte SAMPLE frames: the HELLO and 14 samples in 512 bytes
FIRST_512_LINES = 8  # whole text lines of these samples in the first 512 bytes


def _reboot(at_s):
    return dict(faults=Faults(reboot_at=(at_s,)), events={"connected": 1, "device_restart": 1},
                message="the device restarted (its seq and clock started again); nothing lost, window restarted",
                counters={"device_restarts": 1, "lost_samples": 0, "duplicates": 0})


FAULT_MATRIX = {
    # An Uno's main chip resets, its USB chip keeps the port: at seq 100 (once "duplicates"), and past 32768.
    "reboot at seq 100": _reboot(2.0),
    "reboot at seq 40000": dict(_reboot(800.0), n=41_000),
    "stall": dict(faults=Faults(stall_at=40.0, stall_for=150.0), options={"stall_after_s": 1.0},
                  events={"connected": 1, "stall": 1, "resumed": 1},
                  message="no samples for 1 s although the port is open: is the board running? (check its power, "
                          "its sensor wiring, and that nothing else reads the port)",
                  counters={"lost_samples": 0}),
    "frames read with --text": dict(text_host=True, events={"connected": 1, "wrong_mode": 1},
                                    message=f"the bytes look like binary frames ({FIRST_512_FRAMES} valid in the first "
                                            "512 bytes), not text lines: drop --text", windows=0),
    "text read as frames": dict(text_device=True, events={"connected": 1, "wrong_mode": 1},
                                message=f"the bytes look like text lines ({FIRST_512_LINES} sample lines in the first "
                                        "512 bytes), not binary frames: add --text", windows=0),
    "every sample invalid": dict(samples=NAN_SAMPLES, events={"connected": 1, "invalid_samples": 1},
                                 message="128 samples in a row were all invalid (NaN, infinite, or beyond +-16 g / "
                                         "+-35 rad/s), so no window can be labelled: check the sensor wiring and that "
                                         "the firmware sends g and rad/s",
                                 counters={"invalid_samples": 1000}, windows=0),
    "25 Hz device": dict(rate_hz=25.0, n=3000, events={"connected": 1, "rate_announced": 1}, flagged=25.0,
                         message="warning: the device announces 25 Hz but the model expects 50 Hz; labels are "
                                 "unreliable (windows are marked device_rate_hz)"),
    "100 Hz device": dict(rate_hz=100.0, events={"connected": 1, "rate_announced": 1}, flagged=100.0,
                          message="warning: the device announces 100 Hz but the model expects 50 Hz; labels are "
                                  "unreliable (windows are marked device_rate_hz)"),
    "unplug": dict(faults=Faults(disconnect_every=60.0, disconnect_for=3.0), link=True,
                   events={"connected": 1, "disconnected": 1, "reconnected": 1},
                   counters={"outage_samples": 150, "lost_samples": 0}),
}


@pytest.mark.parametrize("case", list(FAULT_MATRIX))
def test_fault_matrix_each_fault_is_said_once_everywhere_and_counted(model, samples, tmp_path, case):
    spec = FAULT_MATRIX[case]
    n = spec.get("n", N_SAMPLES)
    played = spec.get("samples") or (samples * (n // len(samples) + 1))[:n]
    device = VirtualDevice(played, spec.get("faults", Faults()), speed=500.0 if n > N_SAMPLES else SPEED,
                           text=spec.get("text_device", False), rate_hz=spec.get("rate_hz"),
                           link=tmp_path / "imu" if spec.get("link") else None)
    messages, sink = [], MemorySink()
    pipeline, results, _ = live(model, device, text=spec.get("text_host", False), messages=messages, sink=sink,
                                **spec.get("options", {}))
    counters = pipeline.counters()
    # Once in the counters, once as a JSONL status line, once on stderr.
    assert counters["status"] == spec["events"]
    assert sorted(e["event"] for e in sink.statuses) == sorted(
        event for event, count in spec["events"].items() for _ in range(count))
    if "message" in spec:
        assert messages.count(spec["message"]) == 1, [e["message"] for e in sink.statuses]
        assert [e["message"] for e in sink.statuses].count(spec["message"]) == 1
    for name, value in spec.get("counters", {}).items():
        assert counters["gaps"][name] == value, name
    if "windows" in spec:
        assert len(results) == spec["windows"]
    if "flagged" in spec:
        assert results and {r["device_rate_hz"] for r in results} == {spec["flagged"]}
    else:
        assert all("device_rate_hz" not in r for r in results)
    if case.startswith("reboot"):
        # Nothing lost: every window of the two boots, the second starting right after the first.
        at = round(spec["faults"].reboot_at[0] * 50)
        expected = list(range(128, at + 1, 64)) + list(range(at + 128, n + 1, 64))
        assert [r["sample_end"] for r in results] == expected
