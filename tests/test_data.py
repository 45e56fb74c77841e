"""Training windows from raw HAPT recordings, the official UCI-HAR layout, statistics, folds, bad data."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from firmware_bridge.recording import HaptSource

from edge.frontend import CLASSES, filter_recording

from training.data import DataError, fit_normalization, subject_folds
from training.datasets import load_dataset


@pytest.fixture(scope="module")
def user1(hapt_user1_dir):
    return load_dataset(hapt_user1_dir)


def test_windows_are_the_streaming_front_end_output_of_the_whole_experiment(user1, hapt_user1_dir):
    channels = filter_recording(np.asarray(HaptSource(hapt_user1_dir).read_experiment(2, 1)))
    for i in np.flatnonzero(user1.experiment == 2)[::17]:
        s = user1.start[i]
        assert np.array_equal(user1.X[i], channels[s:s + 128])


def test_windows_start_every_hop_from_each_segment_start(user1, hapt_user1_dir):
    seg = next(s for s in HaptSource(hapt_user1_dir).segments() if s.experiment == 1 and s.activity == 5)
    starts = user1.start[(user1.experiment == 1) & (user1.start >= seg.first - 1) & (user1.start < seg.last)]
    assert starts.tolist() == np.arange(seg.first - 1, seg.last - 128 + 1, 64).tolist()


def test_subject_filter_and_zip_give_the_same_windows_as_the_folder(hapt_zip, user1):
    from_zip = load_dataset(hapt_zip, subjects=[1])
    assert np.array_equal(from_zip.X, user1.X) and np.array_equal(from_zip.y, user1.y)


def test_statistics_come_from_the_given_windows_only(user1):
    mean, std = fit_normalization(user1.X)
    flat = user1.X.reshape(-1, 9).astype(np.float64)
    assert np.allclose(mean, flat.mean(0), atol=1e-6) and np.allclose(std, flat.std(0), rtol=1e-5)
    walking = user1.select(user1.y == 0)
    assert not np.allclose(fit_normalization(walking.X)[1], std)  # statistics follow the subset


def test_subject_folds_are_disjoint_and_cover_every_subject():
    subjects = [1, 3, 5, 6, 7, 8, 11, 14, 15, 16, 17, 19, 21, 22, 23, 25, 26, 27, 28, 29, 30]
    folds = subject_folds(subjects, 3, seed=0)
    vals = [set(v) for _, v in folds]
    assert set().union(*vals) == set(subjects) and sum(len(v) for v in vals) == len(subjects)
    for train, val in folds:
        assert not set(train) & set(val) and set(train) | set(val) == set(subjects)
    assert folds == subject_folds(subjects, 3, seed=0)
    with pytest.raises(DataError, match="cannot make 30 folds"):
        subject_folds(subjects, 30)


def test_uci_official_layout_loads_from_the_zip(uci_subset_zip):
    windows = load_dataset(uci_subset_zip)
    X, y = windows.X, windows.y
    assert X.shape == (2400, 128, 9) and X.dtype == np.float32
    assert set(np.unique(y)) == set(range(len(CLASSES)))
    assert set(windows.subject.tolist()) == {0}  # this copy has no subject file
    # total_acc - body_acc is gravity: slowly varying, near 1 g in magnitude
    gravity = X[:, :, 6:9] - X[:, :, 0:3]
    assert np.median(np.linalg.norm(gravity, axis=-1)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_uci_layout_from_a_folder_and_its_errors(tmp_path, uci_subset_zip):
    with zipfile.ZipFile(uci_subset_zip) as z:
        z.extractall(tmp_path)
    assert load_dataset(tmp_path).X.shape == (2400, 128, 9)
    signals = tmp_path / "UCI HAR Dataset" / "train" / "Inertial Signals"
    lines = (signals / "body_gyro_y_train.txt").read_text().splitlines()
    lines[10] = " ".join(lines[10].split()[:127])
    (signals / "body_gyro_y_train.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"body_gyro_y_train.txt, line 11: expected 128 numbers, found 127"):
        load_dataset(tmp_path)
    (signals / "body_gyro_y_train.txt").unlink()
    with pytest.raises(DataError, match="body_gyro_y_train.txt' is missing"):
        load_dataset(tmp_path)


# --- bad raw data: each gets the file name and line ---------------------------------------------


@pytest.fixture
def broken_copy(tmp_path, hapt_user1_dir):
    shutil.copytree(hapt_user1_dir, tmp_path / "hapt")
    return tmp_path / "hapt" / "RawData"


def _edit_line(path, number, text):
    lines = path.read_text().splitlines()
    lines[number - 1] = text
    path.write_text("\n".join(lines) + "\n")


def test_missing_gyro_file(broken_copy):
    (broken_copy / "gyro_exp02_user01.txt").unlink()
    with pytest.raises(DataError, match="gyro_exp02_user01.txt: missing.*gyroscope file"):
        load_dataset(broken_copy.parent)


def test_wrong_column_count(broken_copy):
    _edit_line(broken_copy / "acc_exp01_user01.txt", 1234, "0.9 -0.1")
    with pytest.raises(DataError, match="acc_exp01_user01.txt, line 1234: 2 columns, a HAPT accelerometer file has 3"):
        load_dataset(broken_copy.parent)


def test_nan_rows(broken_copy):
    _edit_line(broken_copy / "gyro_exp01_user01.txt", 77, "0.01 nan 0.02")
    with pytest.raises(DataError, match="gyro_exp01_user01.txt, line 77: NaN value"):
        load_dataset(broken_copy.parent)


def test_label_rows_outside_the_recording(broken_copy):
    labels = broken_copy / "labels.txt"
    lines = labels.read_text().splitlines()
    number = next(i for i, l in enumerate(lines, 1) if l.split()[:2] == ["2", "1"])
    _edit_line(labels, number, "2 1 5 250 999999")
    with pytest.raises(DataError, match=f"labels.txt, line {number}: segment 250..999999 .* outside"):
        load_dataset(broken_copy.parent)


def test_acc_and_gyro_of_different_length(broken_copy):
    gyro = broken_copy / "gyro_exp01_user01.txt"
    gyro.write_text("\n".join(gyro.read_text().splitlines()[:-5]) + "\n")
    with pytest.raises(DataError, match="acc_exp01_user01.txt: 20598 rows but gyro_exp01_user01.txt has 20593"):
        load_dataset(broken_copy.parent)


def test_truncated_zip_and_missing_path(tmp_path, hapt_zip):
    truncated = tmp_path / "cut.zip"
    truncated.write_bytes(hapt_zip.read_bytes()[:4096])
    with pytest.raises(DataError, match="not a readable zip"):
        load_dataset(truncated)
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nowhere")
