"""Data sets of every kind from real data: HAPT, a folder of one's own recordings, the UCI-HAR layout; the
record -> label -> data set loop of `har-edge record --label` and `har-edge label`; bad data sets."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from firmware_bridge.protocol import Sample
from firmware_bridge.recording import HaptSource, read_recording, write_recording_csv

from edge.frontend import CLASSES, filter_recording

from training import datasets
from training.data import DataError
from training.datasets import dataset_kind, label_runs, load_dataset, load_dataset_hops

from helpers import own_recordings


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory, hapt_user1_dir):
    return own_recordings(tmp_path_factory.mktemp("own") / "data", hapt_user1_dir)


# ---- each kind loads ------------------------------------------------------------------------------

def test_hapt_windows_lie_inside_one_labelled_segment(hapt_user1_dir):
    windows = load_dataset(hapt_user1_dir)
    segments = [s for s in HaptSource(hapt_user1_dir).segments() if s.user == 1]
    assert windows.classes == CLASSES and set(np.unique(windows.y)) == set(range(6))
    assert set(np.unique(windows.experiment)) == {1, 2} and set(np.unique(windows.subject)) == {1}
    for start, experiment, y in zip(windows.start, windows.experiment, windows.y):
        inside = [s for s in segments if s.experiment == experiment and s.first - 1 <= start and start + 128 <= s.last]
        assert len(inside) == 1 and inside[0].activity == y + 1


def test_hapt_transitions_are_classes_when_asked(hapt_user1_dir):
    windows = load_dataset(hapt_user1_dir, classes=("LAYING", "STAND_TO_SIT", "SIT_TO_LIE"))
    counts = np.bincount(windows.y, minlength=3)
    assert windows.classes == ("LAYING", "STAND_TO_SIT", "SIT_TO_LIE") and (counts > 0).all()


@pytest.mark.slow
def test_own_recordings_give_the_front_end_windows_of_each_labelled_run(own_folder, hapt_user1_dir):
    assert dataset_kind(own_folder) == "recordings"
    windows = load_dataset(own_folder)
    assert windows.classes == (*CLASSES, "TRANSITION")          # the six in their order, then the others
    assert set(np.unique(windows.subject)) == {7}                # the manifest's wearer id
    assert (np.bincount(windows.y) > 0).all()
    recording = read_recording(own_folder / "exp02.csv")
    channels = filter_recording(np.array([s.values() for s in recording.samples]))  # (n, 9)
    runs = label_runs(recording.labels)
    for i in np.flatnonzero(windows.experiment == 2)[::13]:
        s = windows.start[i]
        assert np.array_equal(windows.X[i], channels[s:s + 128])
        assert any(a <= s and s + 128 <= b and windows.classes[windows.y[i]] == name for name, a, b in runs)
    # The same samples and labels as HAPT's own windows for the six classes.
    hapt = load_dataset(hapt_user1_dir)
    six = windows.select(windows.y < 6)
    assert len(six) == len(hapt) and np.allclose(six.X, hapt.X, atol=1e-9)


def test_a_gap_in_seq_ends_a_run(own_folder, tmp_path):
    recording = read_recording(own_folder / "exp01.csv")
    kept = recording.samples[:5000] + recording.samples[5100:]  # 100 samples dropped on the way
    labels = recording.labels[:5000] + recording.labels[5100:]
    runs = label_runs(labels, [s.seq for s in kept])
    assert all(not (a < 5000 < b) for _, a, b in runs)


@pytest.mark.slow
def test_uci_layout_loads_the_pre_cut_windows_as_given(uci_subset_zip):
    windows = load_dataset(uci_subset_zip)
    assert dataset_kind(uci_subset_zip) == "uci"
    assert windows.X.shape == (2400, 128, 9) and windows.classes == CLASSES
    assert set(np.unique(windows.y)) == set(range(6)) and set(np.unique(windows.subject)) == {0}
    import zipfile
    with zipfile.ZipFile(uci_subset_zip) as z:
        first = z.read("UCI HAR Dataset/train/Inertial Signals/total_acc_x_train.txt").decode().splitlines()[0]
        y0 = int(z.read("UCI HAR Dataset/train/y_train.txt").decode().split()[0])
    assert np.allclose(windows.X[0, :, 6], [float(v) for v in first.split()], rtol=1e-6)
    assert windows.y[0] == y0 - 1
    with pytest.raises(DataError, match="test/Inertial Signals/body_acc_x_test.txt' is missing"):
        load_dataset(uci_subset_zip, split="test")


def test_other_hops_reuse_one_front_end_pass(hapt_user1_dir, monkeypatch):
    calls = []
    real = datasets.filter_recording
    monkeypatch.setattr(datasets, "filter_recording", lambda raw, config: calls.append(1) or real(raw, config))
    by_hop = load_dataset_hops(hapt_user1_dir, (32, 64))
    assert len(calls) == 2  # two experiments, one pass each for both hops
    dense, device = by_hop[32], by_hop[64]
    assert len(dense) > 1.9 * len(device)
    key = {(e, s): i for i, (e, s) in enumerate(zip(dense.experiment, dense.start))}
    assert all(np.array_equal(device.X[i], dense.X[key[(e, s)]]) for i, (e, s) in
               enumerate(zip(device.experiment, device.start)))


# ---- bad data sets: one clear message each --------------------------------------------------------

@pytest.fixture
def own_copy(own_folder, tmp_path):
    return shutil.copytree(own_folder, tmp_path / "copy")


@pytest.mark.parametrize("manifest, message", [
    ("file,wearer\nexp01.csv,1\n", r"manifest.csv, line 1: header is 'file,wearer'"),
    ("recording,subject\nexp01.csv,anna\nexp02.csv,1\n", r"line 2: subject 'anna' is not a whole number"),
    ("recording,subject\nexp01.csv,1\nexp01.csv,1\nexp02.csv,1\n", r"line 3: exp01.csv is listed twice"),
    ("recording,subject\nexp01.csv,1\nexp03.csv,1\nexp02.csv,1\n", r"line 3: recording exp03.csv does not exist"),
    ("recording,subject\nexp01.csv,1\n", r"\['exp02.csv'\] of the folder are not listed"),
    ("recording,subject\n", r"lists no recordings"),
])
def test_bad_manifest_is_named(own_copy, manifest, message):
    (own_copy / "manifest.csv").write_text(manifest)
    with pytest.raises(DataError, match=message):
        load_dataset(own_copy)


@pytest.mark.slow
def test_unknown_label_names_file_line_and_class_set(own_folder):
    recording = read_recording(own_folder / "exp01.csv")
    first = next(i for i, label in enumerate(recording.labels) if label == "TRANSITION")
    with pytest.raises(DataError, match=rf"exp01.csv, line {first + 2}: label 'TRANSITION' is not in the class set"):
        load_dataset(own_folder, classes=CLASSES)


def test_unlabelled_recording_and_not_a_data_set(own_copy, tmp_path):
    recording = read_recording(own_copy / "exp01.csv")
    write_recording_csv(own_copy / "exp01.csv", recording.samples)  # label column gone
    with pytest.raises(DataError, match="exp01.csv: no label column; label it with `har-edge label"):
        load_dataset(own_copy)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a folder of recordings"):
        load_dataset(tmp_path / "empty")
    with pytest.raises(DataError, match="no 'test' split"):
        load_dataset(own_copy, split="test")


# ---- the loop: record with a label, label afterwards ----------------------------------------------

@pytest.mark.slow
def test_record_with_label_writes_the_label_column(hapt_user1_dir, tmp_path, capsys):
    from firmware_bridge.simulate import VirtualDevice

    from edge.cli import main

    rows = HaptSource(hapt_user1_dir).read_experiment(1, 1)[:2000]
    wire = [Sample(i, i * 20000, *map(float, np.float32(r))) for i, r in enumerate(rows)]  # float32 on the wire
    write_recording_csv(tmp_path / "walk_src.csv", wire)
    with VirtualDevice(tmp_path / "walk_src.csv", speed=50.0, link=tmp_path / "imu") as device:
        rc = main(["record", "--port", device.port, "--out", str(tmp_path / "walk.csv"), "--no-model",
                   "--duration", "2", "--connect-timeout", "5", "--label", "RUNNING"])
    assert rc == 0, capsys.readouterr().err
    recorded = read_recording(tmp_path / "walk.csv")
    assert recorded.labels == ["RUNNING"] * len(wire)
    assert [s.values() for s in recorded.samples] == [s.values() for s in wire]
    assert main(["record", "--port", "/dev/null", "--out", str(tmp_path / "x.csv"), "--label", "a b"]) == 2
    assert "label 'a b' is not a class name" in capsys.readouterr().err


@pytest.mark.slow
def test_label_command_applies_segments_and_plots(own_folder, tmp_path, capsys):
    from edge.cli import main

    source = read_recording(own_folder / "exp01.csv")
    (tmp_path / "seg.csv").write_text("start,end,label\n0,1000,STANDING\n1000,1500,RUNNING\n")
    rc = main(["label", str(own_folder / "exp01.csv"), str(tmp_path / "seg.csv"), "--out", str(tmp_path / "l.csv"),
               "--plot", str(tmp_path / "l.png")])
    assert rc == 0, capsys.readouterr().err
    labelled = read_recording(tmp_path / "l.csv")
    assert labelled.labels == ["STANDING"] * 1000 + ["RUNNING"] * 500 + [None] * (len(source) - 1500)
    assert [s.values() for s in labelled.samples] == [s.values() for s in source.samples]
    assert (tmp_path / "l.png").stat().st_size > 10_000
    (tmp_path / "sec.csv").write_text("start,end,label\n2.0,4.0,WALKING\n")
    assert main(["label", str(own_folder / "exp01.csv"), str(tmp_path / "sec.csv"), "--unit", "seconds",
                 "--out", str(tmp_path / "s.csv")]) == 0
    labels = read_recording(tmp_path / "s.csv").labels
    assert labels[100:200] == ["WALKING"] * 100 and labels[99] is None and labels[200] is None


@pytest.mark.parametrize("segments, message", [
    ("begin,end,label\n0,10,A\n", "header is 'begin,end,label'"),
    ("start,end,label\n0,100,A\n50,150,B\n", "line 3: span overlaps the span of line 2"),
    ("start,end,label\n0,99999999,A\n", "line 2: span 0..99999999 samples is empty or outside the recording"),
    ("start,end,label\n10,5,A\n", "line 2: span 10..5 samples is empty"),
    ("start,end,label\n0,10,my label\n", "line 2: label 'my label' is not a class name"),
    ("start,end,label\n0.5,10,A\n", "not whole sample numbers"),
])
def test_bad_segments_are_named(own_folder, tmp_path, capsys, segments, message):
    from edge.cli import main

    (tmp_path / "seg.csv").write_text(segments)
    assert main(["label", str(own_folder / "exp01.csv"), str(tmp_path / "seg.csv"), "--out",
                 str(tmp_path / "l.csv")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "l.csv").exists()
