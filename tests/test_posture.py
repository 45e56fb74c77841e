"""The session-relative sitting / standing rule (edge/posture.py) on the gravity of a real HAPT recording:
its histogram quantiles against numpy's, any chunking of the stream giving the same labels, wrong
SITTING / STANDING windows read right once the session has shown both postures, a session showing one
posture left as the model reads it, checked windows never touched, the bundle's "posture" object checked,
and the runtime's `--no-posture-rule`."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from firmware_bridge.recording import read_recording

from edge.bundle import BundleError, load_bundle
from edge.frontend import CLASSES, FrontEnd, FrontEndConfig
from edge.mount import gravity_directions
from edge.posture import BIN_DEG, PostureConfig, PostureError, SessionPostures, tilt_deg
from edge.scoring import window_truth

SIT, STAND = CLASSES.index("SITTING"), CLASSES.index("STANDING")


@pytest.fixture(scope="module")
def session(hapt_recording):
    """User 1's first recording as the rule sees it: each window's gravity direction and true class."""
    recording = read_recording(hapt_recording)
    raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
    windows, ends = FrontEnd(FrontEndConfig()).push(raw)  # (k, 128, 9), (k,)
    truth = window_truth(recording.labels, ends)
    classes = np.array([CLASSES.index(t) if t in CLASSES else -1 for t in truth])  # (k,)
    return gravity_directions(windows), classes


@pytest.fixture(scope="module")
def config(bundle_dir):
    """The shipped rule when the bundle has one, else one of the same form."""
    posture = load_bundle(bundle_dir).posture
    return posture or PostureConfig((-0.08, 0.88, 0.48), 20.0, 10.0, (0.47, -0.05), -0.7)


def model_logits(classes: np.ndarray, wrong: float, seed: int = 0) -> np.ndarray:
    """(k, C) logits of a model right on the posture windows but for a fraction `wrong` of them (a seeded
    draw of exactly that many), read as the other."""
    rng = np.random.default_rng(seed)
    logits = np.zeros((len(classes), len(CLASSES)))
    top = np.where(classes >= 0, classes, CLASSES.index("WALKING"))
    postures = np.flatnonzero(np.isin(top, [SIT, STAND]))
    flip = np.zeros(len(classes), bool)
    flip[rng.choice(postures, int(round(wrong * len(postures))), replace=False)] = True
    top = np.where(flip & (top == SIT), STAND, np.where(flip & (top == STAND), SIT, top))
    logits[np.arange(len(top)), top] = 2.0
    return logits


def accuracy(logits: np.ndarray, classes: np.ndarray, which: list[int]) -> float:
    mask = np.isin(classes, which)
    return float((logits.argmax(1)[mask] == classes[mask]).mean())


def test_the_histogram_quantiles_are_numpys_to_the_bin(session, config):
    gravity, classes = session
    s = np.array(tilt_deg(gravity[np.isin(classes, [SIT, STAND])], config.direction))
    rule = SessionPostures(config, CLASSES)
    for i, value in enumerate(s.tolist()):
        low, high = rule.observe(value, False)
        q = config.quantile
        expected = np.percentile(s[:i + 1], [q, 100 - q], method="inverted_cdf")
        assert abs(low - expected[0]) <= BIN_DEG and abs(high - expected[1]) <= BIN_DEG
    assert len(s) > 40 and np.ptp(s) > 15  # sitting and standing lie well apart on the real recording


def numpy_rule(config: PostureConfig, logits: np.ndarray, gravity: np.ndarray, trusted: np.ndarray):
    """The rule as first written, with numpy: a plain histogram, cumsum and searchsorted for the quantiles,
    slice sums for the guard, numpy's arcsin of the dot product for the tilt -> (logits, read, swapped)."""
    counts, sit_votes, n = np.zeros(int(round(180 / BIN_DEG)), np.int64), np.zeros(int(round(180 / BIN_DEG)), np.int64), 0
    out, read, swapped = logits.copy(), 0, 0
    top = logits.argmax(1)
    idx = np.flatnonzero(~trusted & np.isin(top, [SIT, STAND]))
    tilts = np.degrees(np.arcsin(np.clip(gravity[idx] @ np.array(config.direction), -1.0, 1.0)))
    margin = int(config.gate_deg / 2 / BIN_DEG)
    for i, tilt in zip(idx, tilts):
        said_sitting = top[i] == SIT
        b = min(len(counts) - 1, max(0, int((tilt + 90.0) / BIN_DEG)))
        counts[b] += 1
        sit_votes[b] += said_sitting
        n += 1
        q = config.quantile / 100
        bins = np.searchsorted(np.cumsum(counts), [q * n, (1 - q) * n], side="left")
        low, high = (bins + 0.5) * BIN_DEG - 90.0
        lo, hi = int((low + 90.0) / BIN_DEG), int((high + 90.0) / BIN_DEG)
        low_n, low_sit = counts[:lo + margin + 1].sum(), sit_votes[:lo + margin + 1].sum()
        high_n, high_sit = counts[max(0, hi - margin):].sum(), sit_votes[max(0, hi - margin):].sum()
        agrees = low_n - low_sit >= config.min_share * low_n and high_sit >= config.min_share * high_n
        if high - low < config.gate_deg or not agrees:
            continue
        read += 1
        sitting = config.weights[0] * (tilt - low) + config.weights[1] * (high - tilt) + config.bias > 0
        if sitting != said_sitting:
            out[i, [SIT, STAND]] = out[i, [STAND, SIT]]
            swapped += 1
    return out, read, swapped


def test_the_runtimes_rule_is_the_numpy_rule(session, config):
    """The per-window Python path (cumulative histogram, tilts in Python floats) against the rule written
    with numpy, on a real recording's gravity: the same labels, the same windows read and swapped."""
    gravity, classes = session
    tilts = tilt_deg(gravity, config.direction)
    reference = np.degrees(np.arcsin(np.clip(gravity @ np.array(config.direction), -1.0, 1.0)))
    assert np.allclose(tilts, reference, rtol=0, atol=1e-9)
    rng = np.random.default_rng(4)
    for wrong, min_share in ((0.1, config.min_share), (0.2, config.min_share), (0.3, config.min_share), (0.5, 0.0)):
        rule_config = PostureConfig(config.direction, config.quantile, config.gate_deg, config.weights, config.bias,
                                    min_share)
        logits = model_logits(classes, wrong=wrong, seed=5) + rng.normal(0, 0.1, (len(classes), len(CLASSES)))
        trusted = rng.random(len(classes)) < 0.2
        rule = SessionPostures(rule_config, CLASSES)
        out = rule.decide(logits, gravity, trusted)
        expected, read, swapped = numpy_rule(rule_config, logits, gravity, trusted)
        assert np.array_equal(out, expected) and (rule.read, rule.swapped) == (read, swapped)
        assert read > 10 and swapped > 0, (wrong, min_share, read)  # the rule did read and change this stream


def test_the_guards_counts_are_the_histograms_sums(session, config):
    gravity, classes = session
    s = np.array(tilt_deg(gravity, config.direction))
    sitting = np.random.default_rng(6).random(len(s)) < 0.5
    rule = SessionPostures(config, CLASSES)
    for value, said in zip(s, sitting):
        rule.observe(float(value), bool(said))
    bins = np.minimum(len(rule._cumulative[0]) - 1, ((s + 90.0) / BIN_DEG).astype(int))
    counts = np.bincount(bins, minlength=rule._cumulative.shape[1])
    votes = np.bincount(bins, weights=sitting, minlength=rule._cumulative.shape[1]).astype(int)
    margin = int(config.gate_deg / 2 / BIN_DEG)
    for low in np.arange(s.min() - 3, s.max() + 3, BIN_DEG):
        for high in (h for h in (low + 1, low + config.gate_deg, low + 3 * config.gate_deg) if h < 90):
            lo, hi = int((low + 90.0) / BIN_DEG), int((high + 90.0) / BIN_DEG)
            expected = (counts[:lo + margin + 1].sum(), votes[:lo + margin + 1].sum(),
                        counts[max(0, hi - margin):].sum(), votes[max(0, hi - margin):].sum())
            assert rule.end_counts(float(low), float(high)) == tuple(int(v) for v in expected)


def test_a_session_with_both_postures_has_its_wrong_windows_read_right(session, config):
    gravity, classes = session
    logits = model_logits(classes, wrong=0.3)
    out = SessionPostures(config, CLASSES).decide(logits, gravity, np.zeros(len(classes), bool))
    before, after = accuracy(logits, classes, [SIT, STAND]), accuracy(out, classes, [SIT, STAND])
    assert before < 0.75 and after > before + 0.15
    others = ~np.isin(logits.argmax(1), [SIT, STAND])
    assert np.array_equal(out[others], logits[others])  # walking, lying: never touched
    swapped = (out != logits).any(1)
    assert np.allclose(np.sort(out[swapped], 1), np.sort(logits[swapped], 1))  # the two scores swapped, no more


def test_any_chunking_of_the_stream_gives_the_same_labels(session, config):
    gravity, classes = session
    logits, trusted = model_logits(classes, wrong=0.3, seed=1), np.zeros(len(classes), bool)
    whole = SessionPostures(config, CLASSES).decide(logits, gravity, trusted)
    rule, parts = SessionPostures(config, CLASSES), []
    for start, stop in zip([0, 1, 5, 40, 41], [1, 5, 40, 41, len(classes)]):
        parts.append(rule.decide(logits[start:stop], gravity[start:stop], trusted[start:stop]))
    assert np.array_equal(np.concatenate(parts), whole)


def test_a_session_showing_one_posture_is_left_as_the_model_reads_it(session, config):
    gravity, classes = session
    for posture in (SIT, STAND):
        mine = classes == posture
        logits = model_logits(classes[mine], wrong=0.2, seed=2)
        out = SessionPostures(config, CLASSES).decide(logits, gravity[mine], np.zeros(int(mine.sum()), bool))
        assert mine.sum() > 20 and np.array_equal(out, logits)


def test_windows_a_checked_reference_aligned_are_the_models(session, config):
    gravity, classes = session
    logits = model_logits(classes, wrong=0.3, seed=3)
    out = SessionPostures(config, CLASSES).decide(logits, gravity, np.ones(len(classes), bool))
    assert np.array_equal(out, logits)


def test_the_bundles_posture_object_is_checked(bundle_dir, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle_dir, copy)
    data = json.loads((copy / "bundle.json").read_text())
    for bad, says in [({"direction": [0, 0, 0], "quantile": 10, "gate_deg": 5, "weights": [1, 0], "bias": 0}, "not all 0"),
                      ({"direction": [0, 1, 0], "quantile": 10}, "not a posture description"),
                      ("yes", "posture")]:
        (copy / "bundle.json").write_text(json.dumps(data | {"posture": bad}))
        with pytest.raises(BundleError, match=says):
            load_bundle(copy)
    with pytest.raises(PostureError, match="quantile"):
        PostureConfig((0.0, 1.0, 0.0), 60.0, 5.0, (1.0, 0.0), 0.0)


def test_the_runtime_applies_the_bundles_rule_unless_turned_off(bundle_dir, hapt_recording, capsys):
    from edge.cli import main
    from edge.model import load_model
    from edge.pipeline import Pipeline

    model = load_model(bundle_dir, "tflite", "fp32")
    assert (Pipeline(model).postures is not None) == (model.posture is not None)
    assert Pipeline(model, posture_rule=False).postures is None
    for extra in ([], ["--no-posture-rule"]):
        assert main(["replay", str(hapt_recording), "--bundle", str(bundle_dir), "--quiet", *extra]) == 0
        err = capsys.readouterr().err
        assert "against the true labels" in err
        assert ("posture rule read" in err) == (model.posture is not None and not extra)  # the counters line
