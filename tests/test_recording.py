"""Recordings: the project's CSV, raw serial captures and HAPT raw experiments (real data)."""
from __future__ import annotations

import math
import shutil
import struct

import pytest

from firmware_bridge.protocol import Sample, encode_hello, encode_sample
from firmware_bridge.recording import RecordingError, read_recording, write_recording_csv

from edge.frontend import CLASSES


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.fixture()
def exp01(hapt_user1_dir, tmp_path):
    """A private copy of HAPT experiment 1 (user 1): acc, gyro and labels.txt."""
    raw = hapt_user1_dir / "RawData"
    for name in ("acc_exp01_user01.txt", "gyro_exp01_user01.txt", "labels.txt"):
        shutil.copy(raw / name, tmp_path / name)
    return tmp_path / "acc_exp01_user01.txt"


def test_hapt_experiment_reads_acc_gyro_and_labels(exp01):
    rec = read_recording(exp01)
    acc_rows = exp01.read_text().split("\n")
    gyro_rows = exp01.with_name("gyro_exp01_user01.txt").read_text().split("\n")
    n = sum(1 for r in acc_rows if r.strip())
    assert len(rec.samples) == n and rec.rate_hz == 50.0 and rec.nan_samples == 0
    first, last = rec.samples[0], rec.samples[-1]
    assert first.values() == tuple(float(v) for v in acc_rows[0].split() + gyro_rows[0].split())
    assert last.seq == (n - 1) % 65536 and last.t_us == (n - 1) * 20000
    # Every labels.txt row of this experiment, checked at its first and last sample and just outside.
    rows = [list(map(int, line.split())) for line in exp01.with_name("labels.txt").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r[0] == 1 and r[1] == 1]
    assert len(rows) > 10
    covered = set()
    for _, _, activity, a, b in rows:
        expected = CLASSES[activity - 1] if activity <= 6 else None
        assert rec.labels[a - 1] == expected and rec.labels[b - 1] == expected
        covered.update(range(a - 1, b))
    outside = [i for i in range(n) if i not in covered]
    assert outside and all(rec.labels[i] is None for i in outside)
    assert set(rec.labels) == set(CLASSES) | {None}


def test_hapt_without_labels_file_has_no_labels(exp01):
    exp01.with_name("labels.txt").unlink()
    assert read_recording(exp01).labels is None


def test_hapt_missing_gyro_file(exp01):
    exp01.with_name("gyro_exp01_user01.txt").unlink()
    with pytest.raises(RecordingError, match="gyro_exp01_user01.txt: missing.*gyroscope"):
        read_recording(exp01)


def test_hapt_length_mismatch(exp01):
    gyro = exp01.with_name("gyro_exp01_user01.txt")
    gyro.write_text("".join(gyro.read_text().splitlines(keepends=True)[:-5]))
    with pytest.raises(RecordingError, match=r"acc_exp01_user01.txt: \d+ rows but gyro_exp01_user01.txt has \d+"):
        read_recording(exp01)


def test_hapt_wrong_column_count_names_the_line(exp01):
    lines = exp01.read_text().splitlines(keepends=True)
    lines[99] = "0.1 0.2\n"
    exp01.write_text("".join(lines))
    with pytest.raises(RecordingError, match="acc_exp01_user01.txt, line 100: 2 columns"):
        read_recording(exp01)


def test_hapt_truncated_last_line(exp01):
    text = exp01.read_text()
    exp01.write_text(text[: len(text) - 30])  # cut inside the last row
    with pytest.raises(RecordingError, match=r"line \d+: [12] columns"):
        read_recording(exp01)


def test_hapt_non_numeric_and_nan(exp01):
    lines = exp01.read_text().splitlines(keepends=True)
    lines[10] = "0.1 abc 0.3\n"
    exp01.write_text("".join(lines))
    with pytest.raises(RecordingError, match="line 11: column y is 'abc', not a number"):
        read_recording(exp01)
    lines[10] = "0.1 NaN 0.3\n"
    lines[11] = "nan nan nan\n"
    exp01.write_text("".join(lines))
    rec = read_recording(exp01)
    assert rec.nan_samples == 2 and math.isnan(rec.samples[10].ay) and rec.samples[10].ax == 0.1


def test_hapt_label_rows_outside_the_recording(exp01):
    labels = exp01.with_name("labels.txt")
    labels.write_text(labels.read_text() + "1 1 1 20000 99999\n")
    with pytest.raises(RecordingError, match=r"labels.txt, line \d+: samples 20000..99999 are outside experiment 1"):
        read_recording(exp01)


def test_hapt_empty_file(exp01):
    exp01.write_text("")
    with pytest.raises(RecordingError, match="acc_exp01_user01.txt: file is empty"):
        read_recording(exp01)


# ---- recording CSV ----
def test_csv_round_trip_keeps_values_labels_and_nan(exp01, tmp_path):
    rec = read_recording(exp01)
    samples = rec.samples[200:1400]
    labels = rec.labels[200:1400]
    samples[5] = Sample(samples[5].seq, samples[5].t_us, math.nan, 0.0, 1.0, 0.0, 0.0, 0.0)
    path = tmp_path / "walk.csv"
    write_recording_csv(path, samples, labels)
    back = read_recording(path)
    assert back.labels == labels and back.rate_hz == pytest.approx(50.0)
    assert back.nan_samples == 1 and math.isnan(back.samples[5].ax)
    assert [s for i, s in enumerate(back.samples) if i != 5] == [s for i, s in enumerate(samples) if i != 5]
    write_recording_csv(path, samples)
    assert read_recording(path).labels is None
    assert path.read_text().splitlines()[0] == "seq,t_us,ax,ay,az,gx,gy,gz"


def write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("", "file is empty"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n", "header only, no samples"),
    ("time,ax,ay,az\n1,2,3,4\n", "line 1: header is"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n0,0,1,0,0,0,0,0\n1,20000,1,0,0", "line 3: 5 columns, the header has 8"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n0,0,1,0,zero,0,0,0\n", "line 2: column az is 'zero', not a number"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n0,0,1,0,inf,0,0,0\n", "line 2: column az is infinite"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n70000,0,1,0,0,0,0,0\n", "line 2: column seq is 70000, outside 0..65535"),
    ("seq,t_us,ax,ay,az,gx,gy,gz\n0.5,0,1,0,0,0,0,0\n", "line 2: column seq is '0.5', not an integer"),
    ("seq,t_us,ax,ay,az,gx,gy,gz,label\n0,0,1,0,0,0,0,0,jog ging\n", "line 2: label 'jog ging' is not a class name"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    path = write(tmp_path / "bad.csv", text)
    with pytest.raises(RecordingError, match=message) as info:
        read_recording(path)
    assert str(path) in str(info.value)


def test_csv_rate_comes_from_device_time(tmp_path):
    samples = [Sample(i, i * 10000, 0, 0, 1, 0, 0, 0) for i in range(20)]  # 100 Hz
    write_recording_csv(tmp_path / "r.csv", samples)
    assert read_recording(tmp_path / "r.csv").rate_hz == pytest.approx(100.0)


def test_write_rejects_bad_labels(tmp_path):
    samples = [Sample(0, 0, 0, 0, 1, 0, 0, 0)]
    with pytest.raises(RecordingError, match="2 labels for 1 samples"):
        write_recording_csv(tmp_path / "x.csv", samples, ["WALKING", None])
    with pytest.raises(RecordingError, match="sample 0: label 'RUN,NING' is not a class name"):
        write_recording_csv(tmp_path / "x.csv", samples, ["RUN,NING"])


def test_own_class_names_round_trip(tmp_path):
    """A label column may name any activity of the user's (custom class sets), not only the six."""
    samples = [Sample(i, i * 20000, 0, 0, 1, 0, 0, 0) for i in range(3)]
    write_recording_csv(tmp_path / "x.csv", samples, ["RUNNING", None, "bike-ride"])
    assert read_recording(tmp_path / "x.csv").labels == ["RUNNING", None, "bike-ride"]


# ---- raw captures ----
def test_bin_capture_decodes_frames_and_reports_counters(exp01, tmp_path):
    rec = read_recording(exp01)
    sent = [Sample(i, i * 20000, *(f32(v) for v in s.values())) for i, s in enumerate(rec.samples[:500])]
    wire = encode_sample(sent[0])[7:]  # capture began mid-frame
    wire += encode_hello(1, 50, "MPU-6050") + b"".join(encode_sample(s) for i, s in enumerate(sent[1:], 1) if i != 100)
    wire += encode_sample(sent[-1])[:-9]  # capture ended mid-frame
    path = tmp_path / "cap.bin"
    path.write_bytes(wire)
    back = read_recording(path)
    assert back.samples == [s for i, s in enumerate(sent[1:], 1) if i != 100]
    assert back.rate_hz == 50.0 and back.labels is None
    assert back.counters["lost_samples"] == 1 and back.counters["crc_errors"] == 0
    assert back.counters["pending_bytes"] == len(encode_sample(sent[-1])) - 9


def test_bin_errors(tmp_path):
    with pytest.raises(RecordingError, match="file is empty"):
        read_recording(write(tmp_path / "e.bin", ""))
    with pytest.raises(RecordingError, match="no valid SAMPLE frames"):
        read_recording(write(tmp_path / "t.bin", "0.1,0.2,0.98,0,0,0\n" * 20))


def test_unknown_paths(tmp_path):
    with pytest.raises(RecordingError, match="no such file"):
        read_recording(tmp_path / "nope.csv")
    with pytest.raises(RecordingError, match="is a directory"):
        read_recording(tmp_path)
    with pytest.raises(RecordingError, match="unknown recording format '.json'"):
        read_recording(write(tmp_path / "r.json", "{}"))
