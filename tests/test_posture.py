"""The session-relative sitting / standing rule (edge/posture.py) on the gravity of a real HAPT recording:
its histogram quantiles against numpy's, any chunking of the stream giving the same labels, wrong
SITTING / STANDING windows read right once the session has shown both postures, a session showing one
posture left as the model reads it, checked windows never touched, the bundle's "posture" object checked,
and the runtime's `--no-posture-rule`. Rises (sit <-> stand transitions measured as the waist's height
change): found at each labelled sit <-> stand transition of real recordings with the right sign, the same
however the board is mounted, none in a session of one posture, the integration against scipy's rotations
and numpy's sums, and the still stretch after one held as the posture it names."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from firmware_bridge.recording import read_recording

from edge.bundle import BundleError, load_bundle
from edge.frontend import CLASSES, FrontEnd, FrontEndConfig
from edge.mount import gravity_directions
from edge.posture import (
    BIN_DEG,
    STILL_ACC_G,
    STILL_GYRO_RAD_S,
    PostureConfig,
    PostureError,
    RiseTracker,
    SessionPostures,
    still_statistics,
    tilt_deg,
    waist_rise,
)
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
    for wrong, min_share in ((0.1, config.min_share), (0.2, config.min_share), (0.3, 0.25), (0.5, 0.0)):
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


# -- rises ------------------------------------------------------------------------------------------------
STAND_TO_SIT, SIT_TO_STAND = 7, 8  # HAPT activity ids of the two sit <-> stand transitions


@pytest.fixture(scope="module")
def user1(hapt_user1_dir):
    """User 1's two real recordings with per-sample HAPT activity ids (transitions 7-12 included)."""
    from training.streamed import HaptRecordings

    return HaptRecordings(hapt_user1_dir).of_user(1)


def rises_of(raw: np.ndarray) -> tuple[np.ndarray, list]:
    """raw (n, 6) -> (window ends (k,), what RiseTracker says of each window), on the device's grid."""
    config = FrontEndConfig()
    windows, ends = FrontEnd(config).push(raw)  # (k, 128, 9), (k,)
    tracker = RiseTracker(config.sample_rate_hz, config.window, config.hop)
    return ends, [tracker.push(w, e) for w, e in zip(windows, ends.tolist())]


def transitions(activity: np.ndarray, kinds) -> list[tuple[int, int, int]]:
    """(first sample, end, kind) of each labelled run of an activity in `kinds`."""
    from training.streamed import activity_runs

    return [run for run in activity_runs(activity) if run[2] in kinds]


def test_a_rise_names_each_sit_stand_transition_of_a_real_recording(user1):
    """Both recordings of user 1: every labelled STAND_TO_SIT and SIT_TO_STAND gives a sit <-> stand rise in
    the windows just after it, going down and up by a seat's height, and no rise is found anywhere else (the
    transitions to and from lying turn the board too far, the fidgets do not move the waist)."""
    for recording in user1:
        ends, states = rises_of(recording.raw)
        found = [(int(end), s.rise) for end, s in zip(ends, states) if s.rise is not None and s.rise.sit_stand]
        labelled = transitions(recording.activity, (STAND_TO_SIT, SIT_TO_STAND))
        assert len(labelled) == 2 and len(found) == len(labelled), (recording.experiment, found)
        for (_, stop, kind), (end, rise) in zip(labelled, found):
            assert stop <= end <= stop + 3 * 64  # named within the three windows after the transition ends
            assert 0.2 < (rise.metres if kind == SIT_TO_STAND else -rise.metres) < 0.6, rise
            sit, stand = (rise.after, rise.before) if kind == STAND_TO_SIT else (rise.before, rise.after)
            sitting = recording.activity[end:end + 64] == CLASSES.index("SITTING") + 1
            assert sitting.all() == (kind == STAND_TO_SIT)  # the still hop after it is the posture named
            assert 3 < np.degrees(np.arccos(np.clip(np.dot(sit, stand), -1, 1))) < 55


def test_the_still_test_is_numpys_mean_and_std(user1):
    """The tracker's two still statistics (one sum and one sum of squares in float64) against numpy's mean of the
    squared gyro norm and std of the total acceleration on the float32 hops, every hop of both real recordings:
    the same numbers to float32's precision and the same still / not still for each hop, both kinds present."""
    decisions = []
    for recording in user1:
        windows, _ = FrontEnd(FrontEndConfig()).push(recording.raw)  # (k, 128, 9) float32
        for hop in windows[:, 64:]:
            gyro, acc = hop[:, 3:6], hop[:, 6:9]
            expected = (float(np.sqrt(np.mean(np.sum(gyro * gyro, axis=1)))), float(np.linalg.norm(acc.std(axis=0))))
            got = still_statistics(hop)
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)
            still = got[0] < STILL_GYRO_RAD_S and got[1] < STILL_ACC_G
            assert still == (expected[0] < STILL_GYRO_RAD_S and expected[1] < STILL_ACC_G)
            decisions.append(still)
    assert 0.2 < np.mean(decisions) < 0.8


def test_the_rise_is_the_same_however_the_board_is_mounted(user1):
    """The vertical is the measured gravity itself: the recording turned by 20 degrees (about the board's z axis,
    then about its x axis: a re-mounted board) gives the same rises, to the front-end's median filter's
    per-axis rounding of a turned signal."""
    from edge.mount import rotation_matrix

    recording = user1[0]
    plain = [s.rise for s in rises_of(recording.raw)[1]]
    for axis in ((0.0, 0.0, 1.0), (1.0, 0.0, 0.0)):
        matrix = rotation_matrix(np.radians(20.0) * np.array(axis))  # (3, 3)
        turned = np.concatenate([recording.raw[:, :3] @ matrix.T, recording.raw[:, 3:] @ matrix.T], axis=1)
        rotated = [s.rise for s in rises_of(turned)[1]]
        pairs = [(a, b) for a, b in zip(plain, rotated) if a is not None and a.sit_stand]
        assert len(pairs) == 2 and all(b is not None and b.sit_stand for _, b in pairs)
        for a, b in pairs:
            assert abs(a.metres - b.metres) < 0.03 and abs(a.turn_deg - b.turn_deg) < 2.0 and b.miss_deg < 6
            assert np.allclose(matrix @ np.array(a.before), b.before, atol=0.02)  # the references turn with it


def test_a_session_of_one_posture_shows_no_sit_stand_rise(user1):
    """Each recording's SITTING samples alone, then its STANDING samples alone (a session that never changes
    posture, with the joins where the lying or walking between was cut out): no rise names both postures. A
    join turns the gravity with no turn of the gyro, which no body does: the rise's miss says so."""
    for recording in user1:
        for posture in ("SITTING", "STANDING"):
            mine = recording.activity == CLASSES.index(posture) + 1
            _, states = rises_of(recording.raw[mine])
            assert mine.sum() > 1500 and not any(s.rise is not None and s.rise.sit_stand for s in states)
            assert all(s.holding is None for s in states)


def scipy_rise(acc: np.ndarray, gyro: np.ndarray, pre: int, post: int, rate: float) -> tuple[float, float, float]:
    """waist_rise written with the libraries: scipy's rotation vectors for the vertical, numpy's sums."""
    from scipy.spatial.transform import Rotation

    dt = 1.0 / rate
    first, last = acc[:pre].mean(0), acc[-post:].mean(0)
    g0, g1 = np.linalg.norm(first), np.linalg.norm(last)
    up = [first / g0]
    for w in gyro[:-1]:
        up.append(Rotation.from_rotvec(-w * dt).apply(up[-1]))  # the world vertical, seen from the turning board
    ups = np.array(up)  # (n, 3)
    force = np.einsum("ij,ij->i", acc, ups)
    turned = np.arccos(np.clip(ups @ ups[0], -1, 1))
    progress = np.minimum(1.0, turned / turned[-post:].mean())
    velocity = np.cumsum((force - (g0 + (g1 - g0) * progress)) * 9.80665 * dt)
    velocity -= velocity[-1] * np.arange(len(acc)) / (len(acc) - 1)
    height = np.cumsum(velocity * dt)
    turn = np.degrees(np.arccos(np.clip(first @ last / g0 / g1, -1, 1)))
    carried = ups[-post:].mean(0) / np.linalg.norm(ups[-post:].mean(0))
    miss = np.degrees(np.arccos(np.clip(carried @ last / g1, -1, 1)))
    return float(height[-post:].mean()), float(turn), float(miss)


def test_waist_rise_is_the_integration_written_with_scipy(user1):
    recording = user1[0]
    config = FrontEndConfig()
    windows, ends = FrontEnd(config).push(recording.raw)  # (k, 128, 9), (k,)
    (start, stop, _), *_ = transitions(recording.activity, (STAND_TO_SIT,))
    channels = np.concatenate([windows[0], *(w[-64:] for w in windows[1:])]).astype(np.float64)  # (n, 9) the stream
    span = channels[start - 64:stop + 64]  # a still hop either side of the labelled transition
    mine = waist_rise(span[:, 6:9], span[:, 3:6], 64, 64, config.sample_rate_hz)
    theirs = scipy_rise(span[:, 6:9], span[:, 3:6], 64, 64, config.sample_rate_hz)
    assert mine[0] < -0.2 and np.allclose(mine, theirs, rtol=0, atol=1e-9), (mine, theirs)


def test_the_stretch_after_a_rise_holds_the_posture_it_names(session, config, hapt_recording):
    """A model wrong on 40% of the sit / stand windows, on a real recording: the windows of the still stretch
    after each sit <-> stand rise are the posture it named (and that is their true class), the session's other
    windows are read by the histogram rule without the model's agreement from the first rise on; any chunking
    of the stream gives the same labels; without the rises the histogram rule alone decides, with its guard."""
    gravity, classes = session
    recording = read_recording(hapt_recording)
    raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
    _, states = rises_of(raw)
    held = np.array([s.holding is not None for s in states])
    named = np.array([CLASSES.index(s.holding) if s.holding else -1 for s in states])
    assert held.sum() > 15 and np.array_equal(named[held & (classes >= 0)], classes[held & (classes >= 0)])
    logits, trusted = model_logits(classes, wrong=0.4, seed=7), np.zeros(len(classes), bool)
    rule = SessionPostures(config, CLASSES)
    out = rule.decide(logits, gravity, trusted, states)
    assert rule.rises == 2 and accuracy(logits[held], classes[held], [SIT, STAND]) < 0.8
    read = held & np.isin(logits.argmax(1), [SIT, STAND])  # the rule reads only what the model calls a posture
    assert read.sum() > 15 and (out[read].argmax(1) == named[read]).all()
    without = SessionPostures(config, CLASSES, rises=False).decide(logits, gravity, trusted, states)
    plain = SessionPostures(config, CLASSES).decide(logits, gravity, trusted)
    assert np.array_equal(without, plain) and not np.array_equal(out, plain)
    first = next(i for i, s in enumerate(states) if s.rise is not None and s.rise.sit_stand)
    assert np.array_equal(out[:first], plain[:first])  # before the first rise: as without
    chunked, parts = SessionPostures(config, CLASSES), []
    for start, stop in zip([0, 1, first, first + 1, 60], [1, first, first + 1, 60, len(classes)]):
        parts.append(chunked.decide(logits[start:stop], gravity[start:stop], trusted[start:stop], states[start:stop]))
    assert np.array_equal(np.concatenate(parts), out)


def test_a_still_window_is_not_walking(session, config, hapt_recording):
    """On a real recording no walking window is still by the tracker's test and most static ones are; a model
    that calls every still window WALKING_UPSTAIRS has each of them given its best static class instead
    (untrusted windows only), and walking windows are left as they are."""
    gravity, classes = session
    recording = read_recording(hapt_recording)
    raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
    _, states = rises_of(raw)
    still = np.array([s.still for s in states])
    walking = np.isin(classes, [CLASSES.index(c) for c in ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS")])
    static = np.isin(classes, [SIT, STAND, CLASSES.index("LAYING")])
    assert walking.sum() > 50 and not still[walking].any() and still[static].mean() > 0.8
    logits = model_logits(classes, wrong=0.0)
    up = CLASSES.index("WALKING_UPSTAIRS")
    logits[still | walking, up] = 5.0  # (k, C): walking upstairs wherever the board is still, and on the walking
    trusted = np.zeros(len(classes), bool)
    trusted[::7] = True
    rule = SessionPostures(config, CLASSES)
    out = rule.decide(logits, gravity, trusted, states)
    fixed = still & ~trusted
    assert rule.stilled == fixed.sum() > 50
    assert np.isin(out[fixed].argmax(1), [SIT, STAND, CLASSES.index("LAYING")]).all()
    assert (out[still & trusted].argmax(1) == up).all() and (out[walking].argmax(1) == up).all()
    lying = fixed & (classes == CLASSES.index("LAYING"))
    assert lying.sum() > 10 and (out[lying].argmax(1) == classes[lying]).all()  # the model's own static choice
    assert SessionPostures(config, CLASSES, rises=False).decide(logits, gravity, trusted, states)[fixed].argmax(1).tolist() \
        == [up] * int(fixed.sum())


def test_after_a_rise_a_still_window_far_from_both_upright_stretches_is_lying(session, config, hapt_recording):
    """A model that calls every static window STANDING, on a real recording: from the first sit <-> stand rise on,
    each still lying window is LAYING (its gravity is far from both stretches the rise saw), no sitting or
    standing one is; before the rise, nothing is taken from the model."""
    gravity, classes = session
    recording = read_recording(hapt_recording)
    raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
    _, states = rises_of(raw)
    lay = CLASSES.index("LAYING")
    logits = model_logits(classes, wrong=0.0)
    logits[classes == lay] = 0.0
    logits[classes == lay, STAND] = 2.0  # (k, C): lying read as standing
    out = SessionPostures(config, CLASSES).decide(logits, gravity, np.zeros(len(classes), bool), states)
    first = next(i for i, s in enumerate(states) if s.rise is not None and s.rise.sit_stand)
    still = np.array([s.still for s in states])
    after = np.arange(len(classes)) >= first
    lying = after & still & (classes == lay)
    assert lying.sum() > 10 and (out[lying].argmax(1) == lay).all()
    upright = after & np.isin(classes, [SIT, STAND])
    assert upright.sum() > 20 and not (out[upright].argmax(1) == lay).any()
    assert not (out[~after].argmax(1) == lay).any()
