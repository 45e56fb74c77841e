"""Mount alignment (edge/mount.py) on real HAPT windows: what it removes (the mount's tilt), what it keeps
(each window's tilt relative to the wearer's walking posture), the online calibration, and its wiring
into the trainer's checkpoint, the bundle and the runtime."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from edge.frontend import FrontEndConfig
from edge.model import Model
from edge.mount import (
    MountCalibration,
    MountConfig,
    MountError,
    align_by_subject,
    gravity_directions,
    moving,
    reference_direction,
    rotate_windows,
    rotation_onto,
)
from edge.pipeline import Pipeline

from training.datasets import load_dataset

from helpers import read_hapt_raw, sample_block

WALKING, SITTING, LAYING = 0, 3, 5
CANONICAL = (0.979, -0.185, -0.086)  # about the HAPT wearers' mean walking gravity direction
MOUNT = MountConfig(CANONICAL)
TILT = Rotation.from_rotvec(np.radians(15.0) * np.array([0.0, 0.6, 0.8])).as_matrix()  # a 15 degree other mount


@pytest.fixture(scope="module")
def user1(hapt_user1_dir):
    return load_dataset(hapt_user1_dir, subjects=[1])


def angle_deg(a, b) -> np.ndarray:
    return np.degrees(np.arccos(np.clip(np.sum(a * b, axis=-1), -1.0, 1.0)))


def test_moving_windows_are_the_walking_ones(user1, hapt_user1_dir):
    is_moving = moving(user1.X, MOUNT)
    assert is_moving[user1.y <= 2].mean() > 0.95      # walking, upstairs, downstairs
    assert is_moving[user1.y >= SITTING].mean() < 0.02  # sitting, standing, laying (2 of 150 lying windows)
    # Posture changes move hard but turn gravity: few of the stream windows that cover one count.
    from firmware_bridge.recording import HaptSource

    from edge.frontend import FrontEnd


    labels = np.array([(s.experiment, s.user, s.activity, s.first, s.last) for s in HaptSource(hapt_user1_dir).segments()])
    stream, ends = FrontEnd(FrontEndConfig()).push(read_hapt_raw(hapt_user1_dir))  # (k, 128, 9) experiment 1
    transitions = labels[(labels[:, 0] == 1) & (labels[:, 2] >= 7)]  # sit-to-stand, lie-to-sit, ...
    covering = np.array([any(e - 128 < last and e > first - 1 for _, _, _, first, last in transitions) for e in ends])
    rms = np.sqrt((stream[:, :, 0:3] ** 2).sum(2).mean(1))
    hard = (rms[covering] > MOUNT.moving_rms_g).sum()
    assert hard >= 5                                          # they do move hard...
    assert moving(stream[covering], MOUNT).sum() <= hard / 4  # ...but turn gravity: few count (the edges)


def test_rotation_moves_all_three_triplets_and_keeps_magnitudes(user1):
    R = rotation_onto(reference_direction(user1.X, MOUNT), CANONICAL)
    rotated = rotate_windows(user1.X, R)  # (N, 128, 9)
    for k in (0, 3, 6):
        np.testing.assert_allclose(rotated[..., k:k + 3], user1.X[..., k:k + 3] @ R.T.astype(np.float32), atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(rotated[..., k:k + 3], axis=-1),
                                   np.linalg.norm(user1.X[..., k:k + 3], axis=-1), rtol=1e-5, atol=1e-6)


def test_alignment_removes_the_mount_and_keeps_the_posture(user1):
    """The same wearer, once as recorded and once with the board tilted 15 degrees more: after alignment both
    have their walking gravity on the canonical direction, and every window keeps its angle to the walking
    posture (sitting's pelvis tilt is what tells it from standing)."""
    config = MountConfig(CANONICAL)
    subjects = np.ones(len(user1), dtype=np.int64)
    remounted = rotate_windows(user1.X, TILT)
    assert angle_deg(reference_direction(remounted, MOUNT), reference_direction(user1.X, MOUNT)) > 10.0
    for X in (user1.X, remounted):
        aligned = align_by_subject(X, subjects, config)
        np.testing.assert_allclose(reference_direction(aligned, MOUNT), config.canonical, atol=1e-6)
        before = angle_deg(gravity_directions(X), reference_direction(X, MOUNT))
        after = angle_deg(gravity_directions(aligned), np.asarray(config.canonical))
        np.testing.assert_allclose(after, before, atol=1e-3)
    sitting = user1.y == SITTING
    assert angle_deg(gravity_directions(user1.X[sitting]), reference_direction(user1.X, MOUNT)).mean() > 15.0


def test_online_calibration_waits_for_moving_windows_then_matches_offline(user1):
    config = MountConfig(CANONICAL, min_windows=10)
    calibration = MountCalibration(config)
    counted = [calibration.update(window) for window in user1.X[user1.y == LAYING][:30]]
    assert sum(counted) < 3  # lying still is (almost never) a reference
    calibration = MountCalibration(config)
    np.testing.assert_array_equal(calibration.rotation(), np.eye(3))
    walking = user1.X[user1.y == WALKING]
    for i, window in enumerate(walking[:10]):
        assert calibration.update(window)
        assert calibration.calibrated == (i == 9)
    expected = rotation_onto(reference_direction(walking[:10], MOUNT), config.canonical)
    np.testing.assert_allclose(calibration.rotation(), expected, atol=1e-9)
    np.testing.assert_allclose(calibration.align(walking[0]), rotate_windows(walking[0], expected), atol=1e-6)
    restored = MountCalibration.from_dict(config, json.loads(json.dumps(calibration.to_dict())))
    np.testing.assert_allclose(restored.rotation(), calibration.rotation(), atol=1e-12)


@pytest.mark.parametrize("data", [{}, {"direction_sum": [1, 2], "windows": 3},
                                  {"direction_sum": [1, 0, "x"], "windows": 3},
                                  {"direction_sum": [1, 0, float("nan")], "windows": 3}])
def test_a_bad_calibration_file_is_named(data):
    with pytest.raises(MountError, match="wearer.json.*(delete it|delete this one only if it is an old calibration)"):
        MountCalibration.from_dict(MountConfig(CANONICAL), data, "wearer.json")


@pytest.mark.parametrize("data", [{"canonical": [0, 0, 0]}, {"canonical": [1, 0]}, {"moving_rms_g": 0.2},
                                  {"canonical": [1, 0, 0], "moving_rms_g": -1}])
def test_a_bad_mount_description_is_named(data):
    with pytest.raises(MountError, match="bundle.json"):
        MountConfig.from_dict(data, "bundle.json")


class RecordingSession:
    """Stand-in inference session that keeps what it was given (the pipeline's normalized windows)."""

    def __init__(self):
        self.inputs = []

    def predict(self, windows):
        self.inputs.append(np.array(windows))
        return np.zeros((len(windows), 6), np.float32)


def test_pipeline_aligns_windows_once_calibrated(hapt_user1_dir, user1):
    from edge.frontend import FrontEnd

    raw = read_hapt_raw(hapt_user1_dir, n=16000)  # 5 min of user 1: static postures, then walking
    mean, std = user1.X.reshape(-1, 9).mean(0).astype(np.float32), user1.X.reshape(-1, 9).std(0).astype(np.float32)
    config = MountConfig(CANONICAL, min_windows=5)
    session = RecordingSession()
    model = Model(("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"),
                  mean, std, FrontEndConfig(), session, "recorder", mount=config)
    messages = []
    pipeline = Pipeline(model, notify=messages.append)
    for start in range(0, len(raw), 1000):
        pipeline.process(sample_block(raw[start:start + 1000], first=start))
    fed = np.concatenate(session.inputs) * std + mean  # (k, 128, 9) un-normalized, as the model saw them
    windows, _ = FrontEnd(FrontEndConfig()).push(raw)  # (k, 128, 9) the same windows, not aligned
    assert len(fed) == len(windows)
    # Replay the calibration offline: identity until 5 moving windows are in, then their reference.
    offline = MountCalibration(config)
    expected = []
    for window in windows:
        offline.update(window)
        expected.append(offline.align(window))
    np.testing.assert_allclose(fed, np.stack(expected), atol=2e-4)
    assert offline.calibrated and pipeline.counters()["mount"] == {"calibrated": True,
                                                                   "moving_windows": offline.windows}
    first_aligned = next(i for i, w in enumerate(windows) if not np.allclose(fed[i], w, atol=2e-4))
    assert first_aligned > 0 and any("mount calibrated" in m for m in messages)


def _session(raw, model, calibration, messages):
    """One stream (a `har-edge replay`) of raw samples through a fresh Pipeline, the calibration carried."""
    pipeline = Pipeline(model, notify=messages.append, calibration=calibration)
    for start in range(0, len(raw), 1000):
        pipeline.process(sample_block(raw[start:start + 1000], first=start))


def test_a_board_put_back_20_degrees_off_is_detected_and_relearnt(hapt_user1_dir, user1):
    raw = read_hapt_raw(hapt_user1_dir)  # (n, 6) user 1's first recording: static postures, then walking
    mean, std = user1.X.reshape(-1, 9).mean(0).astype(np.float32), user1.X.reshape(-1, 9).std(0).astype(np.float32)
    model = Model(("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"),
                  mean, std, FrontEndConfig(), RecordingSession(), "recorder", mount=MOUNT)
    calibration, messages = MountCalibration(MOUNT), []
    _session(raw, model, calibration, messages)
    assert calibration.calibrated and not any("re-mounted" in m for m in messages)
    learnt = calibration.direction_sum / np.linalg.norm(calibration.direction_sum)
    first_windows = calibration.windows

    # The same wearer again, board on as before: the session agrees and joins the reference.
    _session(raw, model, calibration, messages)
    assert not any("re-mounted" in m for m in messages) and calibration.windows == 2 * first_windows

    # Put back 20 degrees off: the sensor's acc and gyro both turned (the front-end is linear but for its
    # 3-sample median, so this is the board's own view of the same movements).
    axis = np.cross(learnt, [0.0, 0.0, 1.0])
    turn = Rotation.from_rotvec(np.radians(20.0) * axis / np.linalg.norm(axis)).as_matrix()
    remounted = np.hstack([raw[:, 0:3] @ turn.T, raw[:, 3:6] @ turn.T])  # (n, 6)
    _session(remounted, model, calibration, messages)
    found = [m for m in messages if "re-mounted" in m]
    assert len(found) == 1
    assert 18 <= int(found[0].split("moved by ")[1].split()[0]) <= 24  # its first 20 moving windows' mean
    relearnt = calibration.direction_sum / np.linalg.norm(calibration.direction_sum)
    assert angle_deg(relearnt, turn @ learnt) < 1.0  # the new mount, not a blend with the old
    assert abs(calibration.windows - first_windows) <= 2  # this session's moving windows only (the median: +-1)

    # Without re-mount detection the old reference stays and is blended: 20 degrees wrong, then half.
    stale = MountCalibration(MOUNT, learnt * first_windows, first_windows, remount_deg=None)
    _session(remounted, model, stale, [])
    blended = stale.direction_sum / np.linalg.norm(stale.direction_sum)
    assert 8.0 < angle_deg(blended, turn @ learnt) < 12.0
