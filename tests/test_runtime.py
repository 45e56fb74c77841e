"""The streaming pipeline on real HAPT samples: window positions, chunking, gaps, bytes, SIGINT.

The model here is a small stand-in with the inference session's interface (a nearest-centroid
classifier on window statistics, fitted on user 1's labelled windows), so these tests check the
pipeline's wiring without needing an exported bundle; the CLI and live tests use a real bundle.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.frontend import SlidingWindow, filter_recording
from edge.gaps import SEQ_MODULO
from edge.loop import run_loop
from edge.model import Model
from edge.pipeline import Pipeline
from edge.postprocess import SmoothingConfig, softmax
from edge.scoring import window_truth
from edge.sinks import MemorySink
from edge.sources import ByteChunk, LinkEvent, RecordingSource, SampleBlock

from helpers import CLASSES, build_standin_model, read_hapt_raw, sample_block


@pytest.fixture(scope="module")
def model(hapt_user1_dir) -> Model:
    return build_standin_model(hapt_user1_dir)


@pytest.fixture(scope="module")
def raw(hapt_user1_dir) -> np.ndarray:
    return read_hapt_raw(hapt_user1_dir, n=6000)  # 2 minutes of user 1, experiment 1


def run(model, blocks, smoothing=SmoothingConfig(), filter_held=False):
    """filter_held: as the live loop, filter the held samples after every item (before the source waits)."""
    pipeline = Pipeline(model, smoothing, notify=lambda m: None)
    results = []
    for block in blocks:
        results += pipeline.process(block)
        if filter_held:
            pipeline.filter_held()
    return pipeline, results


def test_gap_free_stream_gives_every_window_with_offline_labels(model, raw):
    pipeline, results = run(model, [sample_block(raw)], SmoothingConfig("none", threshold=0.0))
    n = len(raw)
    assert [r["sample_end"] for r in results] == list(range(128, n + 1, 64))
    # The same windows computed offline (whole-recording filter, slicing, normalization).
    channels = filter_recording(raw)  # (n, 9)
    windows, ends = SlidingWindow(128, 64).push(channels)
    logits = model.session.predict(((windows - model.mean) / model.std).astype(np.float32))
    probs = softmax(logits)
    assert [r["raw_label"] for r in results] == [CLASSES[i] for i in probs.argmax(1)]
    assert [r["label"] for r in results] == [r["raw_label"] for r in results]
    got = np.array([[r["probs"][c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, probs, atol=1e-5)
    assert all(abs(sum(r["probs"].values()) - 1) < 1e-4 for r in results)
    assert {"sample_end", "label", "raw_label", "confidence", "probs", "t", "latency_ms"} <= set(results[0])


def test_labels_match_the_true_activity(model, hapt_user1_dir, raw):
    """A sanity check that the pipeline's windows line up with the recording's labels."""
    labels = [None] * len(raw)
    for exp, user, act, first, last in np.loadtxt(hapt_user1_dir / "RawData" / "labels.txt", dtype=int):
        if exp == 1 and user == 1 and act <= 6:
            for i in range(first - 1, min(last, len(raw))):
                labels[i] = CLASSES[act - 1]
    _, results = run(model, [sample_block(raw)], SmoothingConfig("none", threshold=0.0))
    truth = window_truth(labels, [r["sample_end"] for r in results])
    scored = [(r["raw_label"], t) for r, t in zip(results, truth) if t is not None]
    accuracy = np.mean([p == t for p, t in scored])
    assert len(scored) > 30 and accuracy > 0.6  # the stand-in was fitted on this user


@pytest.mark.parametrize("block, filter_held", [(1, False), (13, False), (64, False), (1000, False), (1, True),
                                                (13, True)])
def test_chunking_does_not_change_results(model, raw, block, filter_held):
    _, whole = run(model, [sample_block(raw)])
    source = RecordingSource([], block=block)
    full = sample_block(raw)
    source.seq, source.t_us, source.raw = full.seq, full.t_us, full.raw
    _, pieces = run(model, list(source), filter_held=filter_held)
    def strip(rows):
        return [(r["sample_end"], r["label"], r["raw_label"], r["confidence"], r["probs"]) for r in rows]
    assert strip(pieces) == strip(whole)


def test_long_gap_restarts_windows_at_stream_positions(model, raw):
    keep = np.ones(len(raw), bool)
    keep[1000:1010] = False  # 200 ms missing: too long to interpolate
    block = sample_block(raw)
    pipeline, results = run(model, [SampleBlock(block.seq[keep], block.t_us[keep], raw[keep], 0.0)])
    ends = [r["sample_end"] for r in results]
    before = list(range(128, 1001, 64))
    after = list(range(1010 + 128, len(raw) + 1, 64))
    assert ends == before + after
    counters = pipeline.counters()
    assert counters["gaps"]["long_gaps"] == 1 and counters["gaps"]["lost_samples"] == 10
    assert counters["frontend_resets"] == 1


def test_short_gap_keeps_the_window_grid(model, raw):
    keep = np.ones(len(raw), bool)
    keep[[700, 2001, 2002, 2003]] = False
    block = sample_block(raw)
    pipeline, results = run(model, [SampleBlock(block.seq[keep], block.t_us[keep], raw[keep], 0.0)])
    assert [r["sample_end"] for r in results] == list(range(128, len(raw) + 1, 64))
    assert pipeline.counters()["gaps"]["interpolated_samples"] == 4


def test_framed_bytes_with_corruption_decode_and_count(model, raw):
    from firmware_bridge.protocol import Sample, encode_sample

    frames = [encode_sample(Sample(i % SEQ_MODULO, i * 20_000, *raw[i])) for i in range(len(raw))]
    corrupt = bytearray(frames[3000])
    corrupt[5] ^= 0x40  # a bit flip: CRC failure, the sample is lost and interpolated
    frames[3000] = bytes(corrupt)
    stream = b"\x13\x37garbage" + b"".join(frames[:1500]) + b"\xff\xfe\x01noise\x00" + b"".join(frames[1500:])
    from firmware_bridge.protocol import FrameDecoder

    pipeline = Pipeline(model, decoder=FrameDecoder(), notify=lambda m: None)
    results = [r for i in range(0, len(stream), 977) for r in pipeline.process(ByteChunk(stream[i:i + 977], 0.0))]
    assert [r["sample_end"] for r in results] == list(range(128, len(raw) + 1, 64))
    counters = pipeline.counters()
    assert counters["decoder"]["crc_errors"] == 1
    assert counters["decoder"]["garbage_bytes"] > 0
    assert counters["gaps"]["interpolated_samples"] == 1 and counters["gaps"]["lost_samples"] == 1
    # Same labels as the clean sample path (one interpolated sample does not flip a window here).
    _, clean = run(model, [sample_block(raw)])
    same = np.mean([a["label"] == b["label"] for a, b in zip(results, clean)])
    assert same > 0.97


def test_reconnect_resets_and_keeps_counting(model, raw):
    block = sample_block(raw)
    items = [
        LinkEvent("connected", "pty"),
        SampleBlock(block.seq[:2000], block.t_us[:2000], raw[:2000], 0.0),
        LinkEvent("lost", "pty", detail="gone"),
        LinkEvent("connected", "pty", outage_s=2.0),  # 100 samples' worth
        SampleBlock(block.seq[2100:], block.t_us[2100:], raw[2100:], 0.0),
    ]
    pipeline, results = run(model, items)
    ends = [r["sample_end"] for r in results]
    assert ends == list(range(128, 2001, 64)) + list(range(2100 + 128, len(raw) + 1, 64))
    c = pipeline.counters()
    assert c["link"]["reconnects"] == 1 and c["link"]["disconnects"] == 1 and c["frontend_resets"] == 1


def test_run_loop_on_sigint_flushes_and_reports(model, raw, tmp_path):
    from edge.sinks import JsonlSink

    path = tmp_path / "out.jsonl"

    def source():
        yield sample_block(raw[:1000])
        raise KeyboardInterrupt  # what Ctrl-C does in the main thread

    memory, messages = MemorySink(), []
    report = run_loop(source(), Pipeline(model, notify=messages.append), [memory, JsonlSink(str(path), flush_every=1000)],
                      report=messages.append)
    assert report.interrupted
    assert len(path.read_text().splitlines()) == len(memory.results) == len(range(128, 1001, 64))
    assert "final counters" in messages[-1] and "windows 14" in messages[-1]


def test_window_truth():
    labels = ["A"] * 200 + [None] * 10 + ["B"] * 200
    assert window_truth(labels, [128, 192, 256, 338, 410, 474]) == ["A", "A", None, "B", "B", None]
