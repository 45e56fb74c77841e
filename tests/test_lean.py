"""The lean runtime's fast kernels against the libraries they stand in for, and the fast path against a
reference pipeline built from those libraries: it changes speed, never labels.

- the front-end's sosfilt kernel (loaded without scipy.signal) and min/max median of three vs
  scipy.signal.sosfilt / np.median, on the real recording;
- the bundle's stored filter coefficients vs scipy.signal.butter / sosfilt_zi, and their checks;
- the mount rotation (Rodrigues) vs scipy's Rotation, the 9x9 rotate-and-normalize matrix vs rotating
  then normalizing;
- whole replays of the shipped example and of a fault-injected capture (real pty bytes) through the
  fast pipeline and through a reference pipeline (scipy filters, np.median, rotate_windows, plain
  normalization): identical labels;
- start-up imports: `--help` / `--version` load no numpy, the device path loads no scipy.signal;
- --precision auto's rule.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import signal
from scipy.linalg import block_diag
from scipy.spatial.transform import Rotation

from firmware_bridge.recording import read_recording

from edge.frontend import FilterDesign, FrontEndConfig, FrontEndError, StreamingFilter, _sosfilt, median_of_three
from edge.inference import auto_precision
from edge.model import load_model
from edge.mount import rotate_windows, rotation_matrix, triplet_matrix
from edge.paths import DEFAULT_BUNDLE, EXAMPLE_RECORDING
from edge.pipeline import Pipeline
from edge.postprocess import SmoothingConfig
from edge.replay import StreamedRecording
from edge.scoring import window_truth
from edge.sinks import MemorySink
from edge.sources import ByteChunk, ByteFileSource

from helpers import REPO


@pytest.fixture(scope="module")
def example_raw() -> np.ndarray:
    raw = np.array([s.values() for s in read_recording(EXAMPLE_RECORDING).samples])  # (n, 6) real HAPT user 1
    return raw[np.isfinite(raw).all(axis=1)]


@pytest.mark.slow
def test_sosfilt_kernel_is_scipy_sosfilt_bit_for_bit(example_raw):
    sos = signal.butter(8, 19.0, fs=50.0, output="sos")
    zi = signal.sosfilt_zi(sos)[:, :, None] * example_raw[0]              # (s, 2, 6) scipy's layout
    expected, expected_zi = signal.sosfilt(sos, example_raw, axis=0, zi=zi)
    x = np.array(example_raw.T, order="C")                                 # (6, n) the kernel's layout
    state = np.ascontiguousarray(zi.transpose(2, 0, 1))                    # (6, s, 2)
    _sosfilt(np.ascontiguousarray(sos), x, state)
    assert np.array_equal(x.T, expected)
    assert np.array_equal(state.transpose(1, 2, 0), expected_zi)


def test_median_of_three_is_np_median(example_raw):
    rng = np.random.default_rng(0)
    ties = rng.integers(-2, 3, size=(5000, 6)).astype(float)             # many equal values
    for data in (example_raw, ties):
        expected = np.median(np.lib.stride_tricks.sliding_window_view(data, 3, axis=0), axis=-1)
        assert np.array_equal(median_of_three(data[:-2], data[1:-1], data[2:]), expected)


def test_front_end_matches_the_scipy_recipe(example_raw):
    """The streaming filter, fed in chunks, equals the recipe written with scipy.signal over the whole recording."""
    cfg = FrontEndConfig()
    despiked = np.concatenate([np.repeat(example_raw[:1], 2, axis=0), example_raw])
    despiked = np.median(np.lib.stride_tricks.sliding_window_view(despiked, 3, axis=0), axis=-1)  # (n, 6)
    noise = signal.butter(cfg.noise_order, cfg.noise_cutoff_hz, fs=cfg.sample_rate_hz, output="sos")
    gravity = signal.butter(cfg.gravity_order, cfg.gravity_cutoff_hz, fs=cfg.sample_rate_hz, output="sos")
    smooth, _ = signal.sosfilt(noise, despiked, axis=0, zi=signal.sosfilt_zi(noise)[:, :, None] * example_raw[0])
    g, _ = signal.sosfilt(gravity, smooth[:, :3], axis=0, zi=signal.sosfilt_zi(gravity)[:, :, None] * example_raw[0, :3])
    expected = np.concatenate([smooth[:, :3] - g, smooth[:, 3:], smooth[:, :3]], axis=1).astype(np.float32)
    stream = StreamingFilter(cfg, load_model(DEFAULT_BUNDLE).filters)
    got = np.concatenate([stream.push(example_raw[i:i + 64]) for i in range(0, len(example_raw), 64)])
    # Not bit-equal: the bundle's zi was computed by scipy on the exporting machine, and sosfilt_zi's
    # linear solve differs in the last bits between machines (CI saw it); float32 rounding is the bar.
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)


def test_bundle_filters_are_scipys_design_and_wrong_ones_are_refused():
    cfg = FrontEndConfig()
    stored = load_model(DEFAULT_BUNDLE).filters
    fresh = FilterDesign.design(cfg)
    for name in ("noise_sos", "noise_zi", "gravity_sos", "gravity_zi"):
        # Equal to rounding, not bitwise: scipy's design on another machine (a CI run) differs in the
        # last bits of zi; a different filter differs from the third digit on.
        np.testing.assert_allclose(getattr(stored, name), getattr(fresh, name), rtol=1e-12, atol=1e-14)
    other = FilterDesign.design(FrontEndConfig(noise_cutoff_hz=15.0)).to_dict()
    with pytest.raises(FrontEndError, match="noise filter"):
        FilterDesign.from_dict(other, cfg)
    short = fresh.to_dict()
    short["gravity"]["sos"] = short["gravity"]["sos"][:1]
    with pytest.raises(FrontEndError, match="gravity filter"):
        FilterDesign.from_dict(short, cfg)


def test_rotation_and_folded_matrix_match_scipy_and_rotate_windows(example_raw):
    rng = np.random.default_rng(1)
    for rotvec in rng.normal(size=(200, 3)) * rng.uniform(0, 3, size=(200, 1)):
        np.testing.assert_allclose(rotation_matrix(rotvec), Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-14)
    channels = StreamingFilter().push(example_raw[:128])[None]             # (1, 128, 9) a real window
    rotation = rotation_matrix([0.1, -0.2, 0.05])
    mean, scale = rng.normal(size=9).astype(np.float32), rng.uniform(1, 5, size=9).astype(np.float32)
    reference = (rotate_windows(channels, rotation) - mean) * scale
    folded = channels @ triplet_matrix(rotation, scale, np.float32) - mean * scale
    np.testing.assert_allclose(folded, reference, rtol=1e-5, atol=1e-5)
    placed = block_diag(rotation.T, rotation.T, rotation.T)  # (9, 9) scipy's block diagonal, then scaled and cast
    assert np.array_equal(triplet_matrix(rotation), placed)
    assert np.array_equal(triplet_matrix(rotation, scale, np.float32), (placed * scale).astype(np.float32))


class ReferenceFilter(StreamingFilter):
    """Today's front-end written with the libraries: np.median and scipy.signal.sosfilt per chunk."""

    def push(self, raw):
        raw = np.asarray(raw, dtype=np.float64)
        if self._median_history is None:
            self._history = np.repeat(raw[:1], 2, axis=0)
            noise, gravity = self.design.noise_sos, self.design.gravity_sos
            self._zn = signal.sosfilt_zi(noise)[:, :, None] * raw[0]
            self._zg = signal.sosfilt_zi(gravity)[:, :, None] * raw[0, :3]
            self._median_history = self._history
        extended = np.concatenate([self._history, raw])
        self._history = extended[-2:]
        despiked = np.median(np.lib.stride_tricks.sliding_window_view(extended, 3, axis=0), axis=-1)
        smooth, self._zn = signal.sosfilt(self.design.noise_sos, despiked, axis=0, zi=self._zn)
        g, self._zg = signal.sosfilt(self.design.gravity_sos, smooth[:, :3], axis=0, zi=self._zg)
        return np.concatenate([smooth[:, :3] - g, smooth[:, 3:], smooth[:, :3]], axis=1).astype(np.float32)


class ReferencePipeline(Pipeline):
    """The pipeline with the reference filter, each window rotated by scipy's Rotation and then normalized."""

    def __init__(self, model, **kwargs):
        super().__init__(model, **kwargs)
        self.frontend.filter = ReferenceFilter(model.frontend_config, model.filters)

    def align(self, windows):
        out = np.empty_like(windows)
        self.window_gravity, self.trusted_flags, self.mount_states = [], [], []  # as align leaves them
        for i, window in enumerate(windows):
            self.calibration.update(window)
            self.window_gravity += self.calibration.last_gravity
            self.mount_states += self.calibration.last_states
            self.trusted_flags.append(self.calibration.aligning and self.mount_states[-1] == "checked")
            if self.calibration.calibrated:
                reference = self.calibration.direction_sum / np.linalg.norm(self.calibration.direction_sum)
                canonical = np.asarray(self.calibration.config.canonical)
                axis = np.cross(reference, canonical)
                angle = np.arctan2(np.linalg.norm(axis), reference @ canonical)
                rotation = Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()
                out[i] = rotate_windows(window, rotation)
            else:
                out[i] = window
        self._aligned = out
        return None

    def normalize(self, windows, matrices=None):
        return ((self._aligned - self.model.mean) / self.model.std).astype(np.float32)


def _labels(pipeline_class, model, source) -> list[tuple]:
    pipeline = pipeline_class(model, notify=lambda m: None)
    sink = MemorySink()
    for item in source:
        for result in pipeline.process(item):
            sink.emit(result)
    return [(r["sample_end"], r["label"], r["raw_label"]) for r in sink.results]


@pytest.fixture(scope="module")
def fault_capture(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "faults.bin"
    subprocess.run([sys.executable, "scripts/fault_capture.py", str(EXAMPLE_RECORDING), str(out)], cwd=REPO,
                   check=True, capture_output=True)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_fast_path_gives_the_reference_labels(precision, fault_capture):
    model = load_model(DEFAULT_BUNDLE, precision=precision)
    assert model.mount is not None  # the shipped model aligns the mount: the folded matrix is exercised
    for source in (lambda: StreamedRecording(EXAMPLE_RECORDING), lambda: ByteFileSource(str(fault_capture))):
        fast, reference = _labels(Pipeline, model, source()), _labels(ReferencePipeline, model, source())
        assert len(fast) > 200 and fast == reference


@pytest.mark.slow
@pytest.mark.parametrize("smoothing", [SmoothingConfig(), SmoothingConfig("average", n=3, threshold=0.6)])
def test_prewarm_changes_nothing_of_the_stream(fault_capture, smoothing):
    """The live loop's rehearsal of each window (`Pipeline.rehearsal`, on a copy of the state) before its last
    frame: on the fault-injected capture (garbage, CRC errors, lost and duplicated samples, a reboot) fed a
    frame's bytes at a time, the same window results, probabilities, counters and messages as the same pipeline
    without it, and it ran before nearly every window. With the default post-processing and with a smoother
    that keeps state between windows."""
    model = load_model(DEFAULT_BUNDLE)
    data = fault_capture.read_bytes()

    def stream(prewarm: bool) -> tuple[Pipeline, list[str], list[dict]]:
        notes: list[str] = []
        pipeline = Pipeline(model, smoothing, notify=notes.append)
        results = []
        for at in range(0, len(data), 35):  # 35 bytes: one frame's length, so about one sample per chunk
            rehearse = pipeline.rehearsal() if prewarm else None
            if rehearse is not None:  # what the live source does just before the next frame
                rehearse()
            results += pipeline.process(ByteChunk(data[at:at + 35], 0.0))
        return pipeline, notes, [{k: v for k, v in r.items() if k not in ("t", "latency_ms")} for r in results]

    cold, cold_notes, cold_results = stream(prewarm=False)
    warm, warm_notes, warm_results = stream(prewarm=True)
    assert len(cold_results) > 200 and warm_results == cold_results
    assert warm_notes == cold_notes and any("mount calibrated" in n for n in cold_notes)
    assert warm.counters() == cold.counters() and cold.counters()["decoder"]["crc_errors"] > 0
    assert warm.timers.items["prewarm"] >= 0.9 * len(warm_results) and cold.timers.items["prewarm"] == 0


def test_streamed_recording_is_read_recording(tmp_path):
    recording = read_recording(EXAMPLE_RECORDING)
    streamed = StreamedRecording(EXAMPLE_RECORDING, block=1000)
    blocks = list(streamed)
    raw = np.concatenate([b.raw for b in blocks])
    assert np.array_equal(raw, np.array([s.values() for s in recording.samples]), equal_nan=True)
    assert np.concatenate([b.seq for b in blocks]).tolist() == [s.seq for s in recording.samples]
    assert streamed.labels.names() == recording.labels and streamed.rate_hz == pytest.approx(recording.rate_hz)
    ends = list(range(0, len(recording) + 200, 7))  # before the start, across activity changes, past the end
    assert streamed.labels.window_truth(ends, 128) == window_truth(recording.labels, ends, 128)
    assert any(streamed.labels.window_truth(ends, 128)) and None in streamed.labels.window_truth(ends, 128)


def test_streamed_recording_reports_read_recordings_error(tmp_path):
    lines = EXAMPLE_RECORDING.read_text().splitlines()
    lines[5000] = lines[5000].replace(",", ",x", 1)  # a bad seq deep in the file (not in the first block)
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as expected:
        read_recording(bad)
    with pytest.raises(ValueError) as streamed:
        list(StreamedRecording(bad, block=1000))
    assert str(streamed.value) == str(expected.value) and "line 5001" in str(streamed.value)


def _imported(args: list[str]) -> set[str]:
    code = ("import sys, runpy; sys.argv = ['har-edge', *sys.argv[1:]]\n"
            "try:\n    runpy.run_module('edge.cli', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('MODULES', sorted(sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True).stdout
    return set(json.loads(out.split("MODULES ", 1)[1].replace("'", '"')))


@pytest.mark.slow
def test_help_and_version_load_no_numpy_and_replay_no_scipy_signal(tmp_path):
    for args in (["--help"], ["--version"], ["replay", "--help"]):
        assert "numpy" not in _imported(args)
    short = tmp_path / "short.csv"
    short.write_text("\n".join(EXAMPLE_RECORDING.read_text().splitlines()[:301]) + "\n")
    modules = _imported(["replay", str(short), "--quiet"])
    assert "numpy" in modules and "edge.frontend" in modules
    assert not {m for m in modules if m.startswith(("scipy.signal.", "scipy.spatial", "scipy.stats"))} - {
        "scipy.signal._sosfilt"}


def test_auto_precision_rule():
    assert auto_precision("aarch64", {"fp", "asimd", "asimddp"})[0] == "int8"   # Cortex-A76 (Pi 5)
    assert auto_precision("aarch64", {"fp", "asimd", "crc32"})[0] == "fp32"     # Cortex-A72 (Pi 4)
    assert auto_precision("x86_64", {"avx2", "avx512_vnni"})[0] == "int8"
    assert auto_precision("x86_64", {"avx2", "fma"})[0] == "fp32"


def _variants(tmp_path) -> dict[str, object]:
    """The example recording written the ways a recording CSV comes: as recorded, with CRLF line ends, without
    its label column, and without a final newline but with blank lines after the last row; and two that the
    block parser hands to read_recording deep in the file (a blank line, a label longer than its label column)."""
    text = EXAMPLE_RECORDING.read_text()
    lines = text.splitlines()
    unlabelled = [line.rsplit(",", 1)[0] for line in lines]
    blank, long_label = list(lines), list(lines)
    blank[6000] += "\n"
    long_label[6000] = long_label[6000].rsplit(",", 1)[0] + "," + "A_LABEL_OF_FORTY_CHARACTERS_FOR_ONE_ROW_"
    files = {"as recorded": text, "CRLF": "\r\n".join(lines) + "\r\n", "no label column": "\n".join(unlabelled) + "\n",
             "blank lines at the end": "\n".join(lines) + "\n\n\r\n", "no final newline": "\n".join(lines),
             "a blank line": "\n".join(blank) + "\n", "a long label": "\n".join(long_label) + "\n"}
    out = {}
    for name, content in files.items():
        path = tmp_path / (name.replace(" ", "_") + ".csv")
        path.write_bytes(content.encode())
        out[name] = path
    return out


@pytest.mark.parametrize("block", [1000, 4096])
def test_streamed_recording_reads_every_form_as_read_recording(tmp_path, block):
    for name, path in _variants(tmp_path).items():
        recording = read_recording(path)
        streamed = StreamedRecording(path, block=block)
        blocks = list(streamed)
        assert len(blocks) > 1, name  # read in blocks, not whole
        raw = np.concatenate([b.raw for b in blocks])  # (n, 6)
        assert np.array_equal(raw, np.array([s.values() for s in recording.samples]), equal_nan=True), name
        assert np.concatenate([b.t_us for b in blocks]).tolist() == [s.t_us for s in recording.samples], name
        if recording.labels is None:
            assert streamed.labels is None, name
        else:
            assert streamed.labels.names() == recording.labels, name


@pytest.mark.parametrize("change", [
    ("a decimal seq", lambda line: "7.0" + line[line.index(","):]),
    ("a column short", lambda line: line.split(",", 1)[1]),
    ("a column more", lambda line: line + ",1"),
    ("a word for a value", lambda line: line.replace(",", ",x", 3).replace(",x", ",", 2)),
    ("an infinite value", lambda line: ",".join(line.split(",")[:2] + ["inf"] + line.split(",")[3:])),
    ("a label that is no name", lambda line: line.rsplit(",", 1)[0] + ",not a label"),
    ("a non-ASCII label", lambda line: line.rsplit(",", 1)[0] + ",SITTÏNG"),
    ("a seq beyond 16 bits", lambda line: "70000" + line[line.index(","):]),
    ("a form feed (a line break to str.splitlines)", lambda line: line.replace(",", ",\x0c", 3).replace(",\x0c", ",", 2)),
    ("a NUL after the label", lambda line: line + "\x00"),
])
def test_streamed_recording_refuses_what_read_recording_refuses(tmp_path, change):
    """A row the block parser does not take deep in the file: the replay says exactly what read_recording says
    (naming the file and the line) and replays nothing of it silently."""
    name, edit = change
    lines = EXAMPLE_RECORDING.read_text().splitlines()
    lines[6000] = edit(lines[6000])  # beyond the first block
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as expected:
        read_recording(bad)
    with pytest.raises(ValueError) as streamed:
        list(StreamedRecording(bad, block=1000))
    assert str(streamed.value) == str(expected.value), name
    assert "line 6001" in str(streamed.value), name


def test_window_statistics_match_numpys_mean_and_norm(example_raw):
    """The mount's moving test and gravity directions (matrix products, einsums) against the same quantities
    written with np.mean / np.linalg.norm / np.arccos on real windows, walking and still."""
    from edge.frontend import FrontEnd
    from edge.mount import MountConfig, gravity_directions, moving, rotation_onto

    windows, _ = FrontEnd().push(example_raw)  # (k, 128, 9) float32, the whole recording
    body, gravity = windows[:, :, 0:3].astype(np.float64), (windows[:, :, 6:9] - windows[:, :, 0:3]).astype(np.float64)
    rms = np.sqrt(np.mean(np.sum(body ** 2, axis=2), axis=1))  # (k,)
    first, last = gravity[:, :16].mean(axis=1), gravity[:, -16:].mean(axis=1)  # (k, 3)
    cosine = np.sum(first * last, axis=1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(last, axis=1))
    config = MountConfig(canonical=(0.0, 0.0, 1.0))
    reference = (rms > config.moving_rms_g) & (np.degrees(np.arccos(np.clip(cosine, -1, 1))) < config.max_turn_deg)
    assert 0 < reference.sum() < len(windows)  # both kinds of window are in the recording
    assert np.array_equal(moving(windows, config), reference)
    mean = gravity.mean(axis=1)  # (k, 3)
    np.testing.assert_allclose(gravity_directions(windows), mean / np.linalg.norm(mean, axis=1, keepdims=True),
                               atol=1e-6)
    for direction in gravity_directions(windows[reference])[:50]:
        rotation = rotation_onto(direction, config.canonical)
        np.testing.assert_allclose(rotation @ direction, config.canonical, atol=1e-12)
        np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
        axis = Rotation.from_matrix(rotation).as_rotvec()  # the smallest rotation: about their common normal
        assert abs(axis @ direction) < 1e-9 and abs(axis @ np.asarray(config.canonical)) < 1e-9


def test_streamed_recording_gives_up_on_a_row_without_end(tmp_path):
    """A 'row' of megabytes without a newline (a dump, not a recording): the replay does not gather it without
    bound; it says what read_recording says."""
    endless = tmp_path / "endless.csv"
    endless.write_text("seq,t_us,ax,ay,az,gx,gy,gz,label\n" + "1," * 1_500_000)
    with pytest.raises(ValueError) as expected:
        read_recording(endless)
    with pytest.raises(ValueError) as streamed:
        list(StreamedRecording(endless))
    assert str(streamed.value) == str(expected.value)


def test_online_moving_directions_are_the_numpy_statistics(example_raw):
    """The live path's moving test and gravity directions (Python floats after one matrix product and one
    einsum) against `moving` and `gravity_directions` on the real recording's windows, walking and still."""
    from edge.frontend import FrontEnd
    from edge.mount import MountConfig, gravity_directions, moving, moving_directions

    windows, _ = FrontEnd().push(example_raw)  # (k, 128, 9)
    config = MountConfig(canonical=(0.0, 0.0, 1.0))
    mask, expected = moving(windows, config), gravity_directions(windows)  # (k,), (k, 3)
    assert 0 < mask.sum() < len(windows)
    for got in (moving_directions(windows, config), [moving_directions(w[None], config)[0] for w in windows]):
        assert [is_moving for _, is_moving in got] == mask.tolist()
        np.testing.assert_allclose([d for d, _ in got], expected, rtol=0, atol=1e-15)


def test_python_softmax_and_rounding_are_numpys():
    """softmax_rows / round6 (the live path's, in Python floats) against numpy's softmax and np.round(, 6)."""
    from edge.postprocess import round6, softmax, softmax_rows

    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(20000, 6)) * rng.uniform(0.1, 20, size=(20000, 1))).astype(np.float32)  # (k, 6)
    got, expected = np.array(softmax_rows(logits.tolist())), softmax(logits)
    # The same bits where numpy's float64 exp is the C library's (here); a vector exp (AVX-512) may differ by an ulp.
    np.testing.assert_allclose(got, expected, rtol=1e-15, atol=0)
    ties = np.array([0.5e-6, 1.5e-6, 2.5e-6, 0.1234565, 0.9999995, 1.0, 0.0])  # halves: rounded to even, as np.rint
    for values in (expected, ties[None]):
        assert np.array_equal([round6(row) for row in values.tolist()], np.round(values, 6))


def test_gap_handler_fast_paths_are_its_general_path(fault_capture):
    """The clean-stream fast paths (a few Sample objects in Python, a block's limits from its column peaks)
    against the general per-sample path, on the real samples of a fault-injected capture (frames lost on
    the way) with more faults put in (duplicates, late samples, impossible and NaN values, long gaps, a
    device restart), in chunks of 1..80 samples: the same segments, counters and rate."""
    import dataclasses

    from firmware_bridge.protocol import FrameDecoder

    from edge.gaps import GapHandler, invalid_rows, samples_to_arrays

    rng = np.random.default_rng(3)
    samples = []
    for i, sample in enumerate(f for f in FrameDecoder().feed(fault_capture.read_bytes()) if hasattr(f, "seq")):
        fault = rng.random()
        if fault < 0.002 and samples:
            samples.append(samples[-1])  # a duplicate
        elif fault < 0.004 and samples:
            samples.insert(len(samples) - 1, sample)  # late: before the one it follows
            continue
        elif fault < 0.006:
            sample = dataclasses.replace(sample, ax=float("nan") if fault < 0.005 else 99.0)  # invalid
        elif fault < 0.007:
            del samples[-min(len(samples), 20):]  # a long gap
        elif i == 9000:
            sample = dataclasses.replace(sample, seq=3, t_us=1000)  # the device restarted
        samples.append(sample)
    cuts = np.cumsum(rng.choice([1, 2, 5, 8, 9, 25, 64, 80], size=len(samples)))
    chunks = [samples[a:b] for a, b in zip([0, *cuts.tolist()], cuts.tolist()) if a < len(samples)]
    fast, block, general = GapHandler(), GapHandler(), GapHandler()
    for chunk in chunks:
        seq, t_us, raw = samples_to_arrays(chunk)
        expected = general._push_slow(seq.tolist(), t_us.tolist(), raw, invalid_rows(raw, general.config).tolist())
        for got in (fast.push_samples(chunk), block.push(seq, t_us, raw)):
            assert [(s.start, s.reset) for s in got] == [(s.start, s.reset) for s in expected]
            assert all(np.array_equal(a.raw, b.raw) for a, b in zip(got, expected))
    for handler in (fast, block):
        assert handler.counters == general.counters and handler.rate.rate_hz == general.rate.rate_hz
    counted = general.counters
    assert counted.lost_samples and counted.duplicates and counted.out_of_order and counted.invalid_samples
    assert counted.long_gaps and counted.device_restarts == 1


def test_filtering_while_the_port_waits_changes_nothing(fault_capture):
    """The live loop's order (`filter_held` after every item, as before each wait) against whole-file
    processing, on a fault-injected capture fed a frame or so at a time: the same results, probabilities
    and all (the real bundle, mount alignment included)."""
    model = load_model(DEFAULT_BUNDLE, precision="int8")
    data = fault_capture.read_bytes()

    def results(step: int, filter_held: bool) -> list[tuple]:
        pipeline = Pipeline(model, notify=lambda m: None)
        out = []
        for i in range(0, len(data), step):
            out += pipeline.process(ByteChunk(data[i:i + step], 0.0))
            if filter_held:
                pipeline.filter_held()
        return [(r["sample_end"], r["label"], r["raw_label"], r["confidence"], r["probs"]) for r in out]

    whole = results(len(data), filter_held=False)
    assert len(whole) > 200
    assert results(35, filter_held=True) == whole  # a frame is 35 bytes
    assert results(1000, filter_held=True) == whole
