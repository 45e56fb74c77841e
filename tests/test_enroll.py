"""Wearer enrolment (edge/enroll.py, `har-edge enroll`, `--profile`) on the real HAPT recordings.

Needs a bundle with the features output (har-bundle/2): HAR_EDGE_TEST_BUNDLE=DIR, else the shipped model.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from firmware_bridge.protocol import Sample
from firmware_bridge.recording import read_recording, write_recording_csv
from firmware_bridge.simulate import VirtualDevice

from edge.bundle import load_bundle
from edge.cli import main
from edge.enroll import (
    PROFILE_FORMAT,
    ProfileError,
    Step,
    enrol,
    load_profile,
    recording_windows,
    save_profile,
    step_problem,
)
from edge.model import load_model
from edge.pipeline import Pipeline
from edge.scoring import truth_summary
from edge.sources import RecordingSource

from helpers import REPO, SHIPPED_BUNDLE, TINY_BUNDLE  # TINY_BUNDLE: written by an earlier har-export, har-bundle/1

REMOUNT = Rotation.from_rotvec(np.radians(20.0) * np.array([0.0, 0.0, 1.0])).as_matrix()  # a board 20 deg off


@pytest.fixture(scope="module")
def bundle_dir() -> Path:
    path = Path(os.environ.get("HAR_EDGE_TEST_BUNDLE") or SHIPPED_BUNDLE)
    if load_bundle(path).n_features is None:
        pytest.fail(f"{path} has no features output (har-bundle/1): re-export it with `har-export CHECKPOINT --out "
                    f"{path} --force`, or point HAR_EDGE_TEST_BUNDLE at a har-bundle/2 directory")
    return path


@pytest.fixture(scope="module")
def model(bundle_dir):
    return load_model(bundle_dir, "tflite", "int8")


@pytest.fixture(scope="module")
def user1(hapt_user1_dir):
    """Both real recordings of HAPT user 1 (labels from labels.txt)."""
    raw = hapt_user1_dir / "RawData"
    return read_recording(raw / "acc_exp01_user01.txt"), read_recording(raw / "acc_exp02_user01.txt")


def remounted(recording):
    """The recording as a board mounted 20 degrees differently records it (acc and gyro rotated)."""
    samples = []
    for s in recording.samples:
        v = np.asarray(s.values())
        samples.append(Sample(s.seq, s.t_us, *(REMOUNT @ v[:3]), *(REMOUNT @ v[3:])))
    return samples


def streamed_accuracy(model, samples, labels, profile=None) -> float:
    """The recording through the device pipeline, mount calibration from empty -> per-window accuracy."""
    pipeline = Pipeline(model, notify=lambda m: None, profile=profile)
    results = []
    for item in RecordingSource(samples):
        results += pipeline.process(item)
    return truth_summary(results, labels, model.frontend_config.window)["raw_accuracy"]


# -- what enrolment does ---------------------------------------------------------------------------

def test_enrolment_on_one_recording_improves_the_wearers_other_recording(model, user1, tmp_path):
    # A new mounting of the board (20 degrees off everything the model was trained on), worn in both recordings:
    # until the mount calibration has seen ~25 s of walking, the model reads this wearer's postures wrongly.
    first, second = user1
    data = recording_windows(model, remounted(first), first.labels, source="user 1, experiment 1")
    profile, summary = enrol(model, data)
    assert set(profile.heads) == {"uncalibrated", "aligned"}
    assert summary["states"]["uncalibrated"]["with"] > summary["states"]["uncalibrated"]["without"]
    path = save_profile(profile, tmp_path / "user1.json")
    loaded = load_profile(path, model)
    without = streamed_accuracy(model, remounted(second), second.labels)
    with_profile = streamed_accuracy(model, remounted(second), second.labels, loaded)
    assert without < 0.97                            # there is something to fix ...
    assert with_profile >= without + 0.02            # ... and the profile fixes a real part of it


def test_a_profile_does_not_make_a_remounted_board_worse(model, user1):
    # Enrolled with the board as it was; the wearer then re-mounts it 20 degrees off.
    first, second = user1
    profile, _ = enrol(model, recording_windows(model, first.samples, first.labels))
    without = streamed_accuracy(model, remounted(second), second.labels)
    assert streamed_accuracy(model, remounted(second), second.labels, profile) >= without - 0.01


def streamed_windows(model, samples, profile=None, calibration=None):
    """The recording through the device pipeline, without the posture stage that runs after the profile (it
    re-reads sitting / standing) -> per window (result, mount state, body-acc RMS as cut)."""
    from edge.enroll import still_rms
    from edge.mount import MountCalibration

    if calibration is not None:  # a copy: the stream must not change the caller's
        calibration = MountCalibration.from_dict(model.mount, calibration.to_dict())
    pipeline = Pipeline(model, notify=lambda m: None, profile=profile, calibration=calibration, posture_rule=False)
    rms = []
    original = pipeline.filter_and_window

    def windows_and_rms(raw):
        windows, ends = original(raw)
        rms.extend(still_rms(windows).tolist())
        return windows, ends
    pipeline.filter_and_window = windows_and_rms
    out = []
    for item in RecordingSource(samples):
        new = pipeline.process(item)
        out += zip(new, pipeline.mount_states[-len(new):] if new else [])
    return [(r, state, value) for (r, state), value in zip(out, rms)]


def pushing_towards(profile, label, amount=50.0):
    """The profile with every head's bias pushed hard towards `label`: a correction that would turn anything it
    may touch into it."""
    for head in profile.heads.values():
        head.bias[list(profile.classes).index(label)] += amount
        head.corrects[:] = True
    return profile


def test_a_profile_never_turns_a_moving_window_into_a_posture(model, user1):
    # Measured on the training users: an aligned head turned a wearer's stairs into SITTING. The correction may
    # not contradict the window's own motion, whatever its weights say.
    first, second = user1
    profile = pushing_towards(enrol(model, recording_windows(model, first.samples, first.labels))[0], "SITTING")
    without = streamed_windows(model, second.samples)
    with_profile = streamed_windows(model, second.samples, profile)
    assert [r["sample_end"] for r, *_ in without] == [r["sample_end"] for r, *_ in with_profile]
    moving = [(a["raw_label"], b["raw_label"]) for (a, _, rms), (b, *_) in zip(without, with_profile) if rms > 0.1]
    still = [(a["raw_label"], b["raw_label"]) for (a, _, rms), (b, *_) in zip(without, with_profile) if rms <= 0.1]
    assert len(moving) > 50 and len(still) > 50  # the recording has both
    assert all(after == before for before, after in moving if before.startswith("WALKING"))  # walking stays
    assert sum(after == "SITTING" for _, after in still) > 0.9 * len(still)  # the push works where it may


def test_a_profile_leaves_windows_aligned_by_an_unchecked_saved_reference_alone(model, user1):
    # A saved mount calibration (`enroll --mount-calibration`) rotates the next session's windows from its first
    # one, before its walking has checked the board was not re-mounted: the aligned head is not applied there.
    from edge.enroll import enrolment_calibration

    first, second = user1
    data = recording_windows(model, first.samples, first.labels)
    profile = pushing_towards(enrol(model, data)[0], "LAYING")
    saved = enrolment_calibration(model, data.windows)
    without = streamed_windows(model, second.samples, None, saved)
    with_profile = streamed_windows(model, second.samples, profile, saved)
    states = [state for _, state, _ in with_profile]
    assert states[0] == "carried, unchecked" and "checked" in states
    carried = [(a["raw_label"], b["raw_label"]) for (a, *_), (b, state, _) in zip(without, with_profile)
               if state == "carried, unchecked"]
    checked_still = [b["raw_label"] for (b, state, rms) in with_profile if state == "checked" and rms <= 0.1]
    assert len(carried) > 20 and all(before == after for before, after in carried)
    assert checked_still and all(label == "LAYING" for label in checked_still)


def test_a_profile_that_corrects_nothing_changes_nothing(model, user1):
    first, second = user1
    profile, _ = enrol(model, recording_windows(model, first.samples, first.labels))
    for head in profile.heads.values():
        head.weights[:] = 0
        head.bias[:] = 0
    samples = second.samples[:6000]

    def labels(p):
        pipeline = Pipeline(model, notify=lambda m: None, profile=p)
        return [(r["sample_end"], r["raw_label"], r["label"]) for item in RecordingSource(samples)
                for r in pipeline.process(item)]
    assert labels(profile) == labels(None)


def test_profile_file_is_small_readable_json_naming_its_bundle(model, user1, tmp_path):
    first, _ = user1
    profile, _ = enrol(model, recording_windows(model, first.samples, first.labels))
    path = tmp_path / "p.json"
    path.write_text("the old profile")
    save_profile(profile, path)
    data = json.loads(path.read_text())
    assert data["format"] == PROFILE_FORMAT and data["model_id"] == model.bundle.model_id
    assert data["classes"] == list(model.classes)
    assert path.stat().st_size < 20_000 and len(path.read_text().splitlines()) < 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]  # no temp file left behind


def test_enrolment_length_is_limited_to_the_first_minutes(model, user1):
    first, _ = user1
    full = recording_windows(model, first.samples, first.labels)
    one_minute = recording_windows(model, first.samples, first.labels, max_labelled_s=60.0)
    assert len(one_minute.windows) == round(60 * 50 / 64) < len(full.windows)
    np.testing.assert_array_equal(one_minute.windows, full.windows[:len(one_minute.windows)])


# -- the guided flow -------------------------------------------------------------------------------

def bouts(recording, label):
    """(start, stop) sample ranges of the recording's labelled runs of `label`, longest first; for a posture the
    stillest first (HAPT labels some postures while the wearer still settles): least spread of |acc|."""
    runs, start = [], None
    labels = recording.labels + [None]
    for i, value in enumerate(labels):
        if value == label and start is None:
            start = i
        elif value != label and start is not None:
            runs.append((start, i))
            start = None
    if label == "WALKING":
        return sorted(runs, key=lambda r: r[0] - r[1])
    magnitude = np.linalg.norm([s.values()[:3] for s in recording.samples], axis=1)  # (n,) g
    return sorted(runs, key=lambda r: magnitude[r[0]:r[1]].std())


def guided_stream(recording, plan, seconds_each) -> list[Sample]:
    """Real samples in the order of `plan` (one class per guided attempt), each run lasting as long as the
    guide's get-ready time plus that attempt's recording (the guide's schedule is exact in stream samples),
    1 s more at the end, renumbered as one fresh device stream."""
    rows = []
    for i, (label, seconds) in enumerate(zip(plan, seconds_each)):
        n = int((5.0 + seconds + (1.0 if i == len(plan) - 1 else 0.0)) * 50)
        start, stop = next(((a, b) for a, b in bouts(recording, label) if label == "WALKING" or b - a >= n))
        rows += recording.samples[start:start + n]  # walking continues through the turns after its bout
    return [Sample(i, i * 20_000, *s.values()) for i, s in enumerate(rows)]


@pytest.mark.slow
def test_guided_enrolment_through_a_pty_repeats_the_step_done_wrong(bundle_dir, user1, tmp_path):
    first, _ = user1
    step = 12.0  # --step-seconds: HAPT's labelled runs last 16-20 s
    # The wearer walks when asked to sit, then sits when the guide repeats the step.
    plan = ["STANDING", "WALKING", "SITTING", "LAYING", "WALKING"]
    samples = guided_stream(first, plan, [step, step, step, step, 1.5 * step])
    profile = tmp_path / "wearer.json"
    with VirtualDevice(samples, speed=25.0, link=tmp_path / "imu") as device:
        proc = subprocess.run(
            [sys.executable, "-m", "edge.cli", "enroll", "--port", device.port, "--profile", str(profile),
             "--bundle", str(bundle_dir), "--step-seconds", str(step), "--connect-timeout", "10"],
            capture_output=True, text=True, timeout=180, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert out.count("step 2/4: SIT DOWN") == 2 and "(attempt 2)" in out
    assert out.count("Let's repeat this step") == 1
    repeat = out[out.index("Let's repeat"):]
    assert "moving" in out[out.index("step 2/4"):out.index("Let's repeat")] and "step 3/4" in repeat
    assert "recording: sit down" in out and "3..." in out  # countdowns
    assert "once the mount is calibrated" in out and f"saved {profile}" in out
    loaded = load_profile(profile, load_model(bundle_dir, "tflite", "int8"))
    assert loaded.fit["source"] == "guided enrolment"
    corrected = {c for c, on in zip(loaded.classes, loaded.heads["aligned"].corrects) if on}
    assert corrected == {"WALKING", "SITTING", "STANDING", "LAYING"}  # not the stairs: none were enrolled
    stairs = [loaded.classes.index(c) for c in ("WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS")]
    assert not loaded.heads["aligned"].weights[stairs].any() and not loaded.heads["aligned"].bias[stairs].any()


@pytest.mark.slow
def test_guided_enrolment_says_where_the_board_is_and_an_interrupted_one_fails(bundle_dir, user1, tmp_path):
    first, _ = user1
    profile = tmp_path / "wearer.json"
    command = [sys.executable, "-m", "edge.cli", "enroll", "--port", str(tmp_path / "imu"), "--profile", str(profile),
               "--bundle", str(bundle_dir), "--step-seconds", "12"]
    # No board: it says it is waiting for the port (not "start now" to a wearer facing a dead board), then gives up.
    absent = subprocess.run(command + ["--connect-timeout", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert absent.returncode == 2 and "start now" not in absent.stdout, absent.stdout + absent.stderr
    assert f"(waiting for the device: {tmp_path / 'imu'} is not there" in absent.stdout
    assert "gave up after 1 s" in absent.stderr and "Traceback" not in absent.stderr
    # The board unplugged mid-step, then Ctrl-C: the loss is said, the exit is a failure, no profile.
    samples = guided_stream(first, ["STANDING"], [12.0])
    with VirtualDevice(samples, speed=4.0, link=tmp_path / "imu") as device:
        proc = subprocess.Popen(command + ["--connect-timeout", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, cwd=REPO)
        lines = []
        while not any("recording: stand" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"enrol ended early: {''.join(lines)}{proc.stderr.read()}"
            lines.append(line)
        device.stop()  # unplugged
        while not any("lost the device" in line for line in lines):
            line = proc.stdout.readline()
            assert line, f"enrol ended without saying the board is gone: {''.join(lines)}"
            lines.append(line)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, "".join(lines) + out + err
    assert f"no profile was saved to {profile}" in err and "Traceback" not in err and not profile.exists()
    assert "step 1/4: STAND" in "".join(lines) and "start now" in "".join(lines)


def bout_windows(model, recording, label) -> np.ndarray:
    """(k, 128, 9) front-end windows inside the recording's first `bouts` run of `label`."""
    from edge.frontend import FrontEnd

    start, stop = bouts(recording, label)[0]
    raw = np.array([s.values() for s in recording.samples[:stop]])  # (stop, 6)
    windows, ends = FrontEnd(model.frontend_config).push(raw)  # (n, 128, 9), (n,)
    return windows[ends - 128 >= start]


def test_step_checks_catch_the_wrong_activity(model, user1):
    first, _ = user1
    of = {c: bout_windows(model, first, c) for c in ("SITTING", "STANDING", "WALKING", "LAYING")}
    sit, stand, walk, lie = (Step(c, "x", 20) for c in ("SITTING", "STANDING", "WALKING", "LAYING"))
    upright = of["STANDING"][:, :, 6:9].mean(axis=(0, 1))
    upright /= np.linalg.norm(upright)
    assert step_problem(stand, of["STANDING"], None) is None
    assert step_problem(sit, of["SITTING"], upright) is None
    assert step_problem(lie, of["LAYING"], upright) is None
    assert step_problem(walk, of["WALKING"], upright) is None
    assert "moving" in step_problem(sit, of["WALKING"], upright)
    assert "moving" in step_problem(stand, of["WALKING"], None)
    assert "still" in step_problem(walk, of["STANDING"], upright)
    assert "lie down flat" in step_problem(lie, of["SITTING"], upright)
    assert "sit upright" in step_problem(sit, of["LAYING"], upright)
    assert "too little data" in step_problem(sit, of["SITTING"][:2], upright)


# -- the command line ------------------------------------------------------------------------------

def test_enroll_from_a_labelled_csv_then_replay_with_the_profile(bundle_dir, user1, tmp_path, capsys):
    first, second = user1
    enrolment, scored = tmp_path / "first.csv", tmp_path / "second.csv"
    write_recording_csv(enrolment, first.samples, labels=first.labels)
    write_recording_csv(scored, second.samples, labels=second.labels)
    profile, mount = tmp_path / "me.json", tmp_path / "mount.json"
    assert main(["enroll", "--recording", str(enrolment), "--profile", str(profile), "--bundle", str(bundle_dir),
                 "--mount-calibration", str(mount)]) == 0
    out = capsys.readouterr().out
    assert "what the profile changes on your own enrolment data" in out and f"saved {profile}" in out
    from edge.mount import MountCalibration

    model = load_model(bundle_dir, "tflite", "int8")
    calibration = MountCalibration.from_dict(model.mount, json.loads(mount.read_text()), str(mount))
    assert calibration.calibrated  # user 1's walking and stairs: the next session starts aligned
    summary = tmp_path / "s.json"
    assert main(["replay", str(scored), "--bundle", str(bundle_dir), "--profile", str(profile), "--quiet",
                 "--mount-calibration", str(mount), "--summary-json", str(summary)]) == 0
    assert "wearer profile" in capsys.readouterr().err
    assert json.loads(summary.read_text())["truth"]["scored_windows"] > 100


def _enrolled_profile(bundle_dir, user1, tmp_path) -> Path:
    first, _ = user1
    model = load_model(bundle_dir, "tflite", "int8")
    profile, _ = enrol(model, recording_windows(model, first.samples[:12000], first.labels[:12000]))
    return save_profile(profile, tmp_path / "good.json")


@pytest.mark.parametrize("case, expected", [
    ("garbage", "is not a JSON profile"),
    ("not a profile", "is not a har-edge wearer profile"),
    ("newer format", "newer than this har-edge reads"),
    ("another bundle", "was fitted for another model"),
    ("damaged", "is damaged"),
    ("missing", "does not exist"),
])
def test_bad_profiles_are_refused_with_a_clear_message(bundle_dir, user1, tmp_path, capsys, case, expected):
    good = json.loads(_enrolled_profile(bundle_dir, user1, tmp_path).read_text())
    path = tmp_path / "bad.json"
    if case == "garbage":
        path.write_bytes(b"\x00\xff not json")
    elif case == "not a profile":
        path.write_text(json.dumps({"direction_sum": [1, 0, 0], "windows": 3}))  # a mount calibration file
    elif case == "newer format":
        path.write_text(json.dumps({**good, "format": "har-profile/2"}))
    elif case == "another bundle":
        path.write_text(json.dumps({**good, "model_id": "0" * 64}))
    elif case == "damaged":
        good["heads"]["aligned"]["weights"]["SITTING"] = good["heads"]["aligned"]["weights"]["SITTING"][:-1]
        path.write_text(json.dumps(good))
    first, _ = user1
    recording = tmp_path / "r.csv"
    write_recording_csv(recording, first.samples[:2000])
    rc = main(["replay", str(recording), "--bundle", str(bundle_dir), "--profile", str(path), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "har-edge replay: error:" in err and expected in err and str(path) in err
    assert "Traceback" not in err and "enroll" in err


def test_enroll_refuses_an_unlabelled_recording_and_an_old_bundle(bundle_dir, user1, tmp_path, capsys):
    first, _ = user1
    unlabelled = tmp_path / "u.csv"
    write_recording_csv(unlabelled, first.samples[:3000])
    assert main(["enroll", "--recording", str(unlabelled), "--profile", str(tmp_path / "p.json"),
                 "--bundle", str(bundle_dir)]) == 2
    assert "has no labels" in capsys.readouterr().err
    labelled = tmp_path / "l.csv"
    write_recording_csv(labelled, first.samples[:3000], labels=first.labels[:3000])
    assert main(["enroll", "--recording", str(labelled), "--profile", str(tmp_path / "p.json"),
                 "--bundle", str(TINY_BUNDLE)]) == 2
    err = capsys.readouterr().err
    assert "no features output" in err and "har-export" in err and not (tmp_path / "p.json").exists()
    with pytest.raises(ProfileError, match="no features output"):
        load_profile(_enrolled_profile(bundle_dir, user1, tmp_path), load_model(TINY_BUNDLE, "onnx", "fp32"))
