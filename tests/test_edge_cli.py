"""`har-edge` end to end on real data: replay (every format), record, run, SIGINT, bad input.

Needs a model bundle: HAR_EDGE_TEST_BUNDLE=DIR (any bundle written by har-export), else the one
shipped in edge/models/default, else the export tests' tiny bundle; without any, these skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from firmware_bridge.protocol import encode_sample
from firmware_bridge.recording import read_recording, write_recording_csv

from edge.cli import main

from helpers import REPO, read_jsonl
from services import signal_until_exit


def replay(args, capsys):
    rc = main(["replay", *map(str, args)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def labels_of(results):
    return [(r["sample_end"], r["label"], r["raw_label"]) for r in results]


# -- replay -------------------------------------------------------------------------------------

def test_replay_hapt_writes_one_object_per_window(bundle_dir, hapt_recording, tmp_path, capsys):
    out, summary = tmp_path / "out.jsonl", tmp_path / "summary.json"
    rc, stdout, stderr = replay([hapt_recording, "--bundle", bundle_dir, "--jsonl", out, "--summary-json", summary], capsys)
    assert rc == 0, stderr
    results = read_jsonl(out)
    n = len(read_recording(hapt_recording))
    assert [r["sample_end"] for r in results] == list(range(128, n + 1, 64))
    classes = json.loads((bundle_dir / "bundle.json").read_text())["classes"]
    for r in results:
        assert r["label"] in classes + ["uncertain"] and r["raw_label"] in classes
        assert set(r["probs"]) == set(classes) and abs(sum(r["probs"].values()) - 1) < 1e-3
        assert r["raw_label"] == max(r["probs"], key=r["probs"].get)
    s = json.loads(summary.read_text())
    assert s["windows"] == len(results) and s["samples"] == n
    # User 1's labelled activities, recognized by a trained model: far above chance (1/6).
    assert s["truth"]["scored_windows"] > 150 and s["truth"]["raw_accuracy"] > 0.7
    assert "windows from" in stderr and "x real time" in stderr and "against the true labels" in stderr
    assert stdout.count("\n") >= 5  # live lines, one per label change


@pytest.mark.slow
def test_replay_formats_agree(bundle_dir, hapt_recording, tmp_path, capsys):
    """The same samples as HAPT text, the project's CSV and a raw serial capture give the same labels."""
    recording = read_recording(hapt_recording)
    samples = recording.samples[:6000]
    csv_path, bin_path = tmp_path / "rec.csv", tmp_path / "rec.bin"
    write_recording_csv(csv_path, samples, recording.labels[:6000])
    bin_path.write_bytes(b"".join(encode_sample(s) for s in samples))
    outputs = {}
    for name, path in (("hapt", hapt_recording), ("csv", csv_path), ("bin", bin_path)):
        out = tmp_path / f"{name}.jsonl"
        rc, _, stderr = replay([path, "--bundle", bundle_dir, "--jsonl", out, "--quiet"], capsys)
        assert rc == 0, stderr
        outputs[name] = labels_of(read_jsonl(out))
    assert outputs["csv"] == outputs["bin"] == outputs["hapt"][: len(outputs["csv"])]
    assert len(outputs["csv"]) == len(range(128, 6001, 64))


def test_backends_agree_in_fp32(bundle_dir, hapt_recording, tmp_path, capsys):
    got = {}
    for backend in ("tflite", "onnx"):
        out = tmp_path / f"{backend}.jsonl"
        rc, _, stderr = replay([hapt_recording, "--bundle", bundle_dir, "--backend", backend, "--precision", "fp32",
                                "--jsonl", out, "--quiet"], capsys)
        assert rc == 0, stderr
        got[backend] = [r["raw_label"] for r in read_jsonl(out)]
    agree = np.mean([a == b for a, b in zip(got["tflite"], got["onnx"])])
    assert len(got["onnx"]) == len(got["tflite"]) and agree >= 0.99


def test_replay_plot(bundle_dir, hapt_recording, tmp_path, capsys):
    png = tmp_path / "timeline.png"
    rc, _, stderr = replay([hapt_recording, "--bundle", bundle_dir, "--plot", png, "--quiet"], capsys)
    assert rc == 0, stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


def test_jsonl_to_stdout_keeps_stdout_machine_readable(bundle_dir, tmp_path, hapt_recording, capsys):
    csv_path = tmp_path / "short.csv"
    write_recording_csv(csv_path, read_recording(hapt_recording).samples[:1000])
    rc, stdout, stderr = replay([csv_path, "--bundle", bundle_dir, "--jsonl", "-"], capsys)
    assert rc == 0, stderr
    lines = stdout.splitlines()
    assert len(lines) == len(range(128, 1001, 64)) and all(json.loads(l)["sample_end"] for l in lines)


# -- bad input: one clear line, exit 2, no traceback ------------------------------------------------

def _bad_csv(tmp):
    p = tmp / "bad.csv"
    p.write_text("seq,t_us,ax,ay,az,gx,gy,gz\n0,0,1,0,0,0,0,0\n1,20000,1,zero,0,0,0,0\n")
    return p, "line 3"


def _empty_bin(tmp):
    p = tmp / "empty.bin"
    p.write_bytes(b"")
    return p, "empty"


def _noise_bin(tmp):
    p = tmp / "noise.bin"
    p.write_bytes(bytes(range(1, 256)) * 20)
    return p, "no valid SAMPLE frames"


def _unknown_suffix(tmp):
    p = tmp / "rec.xlsx"
    p.write_text("x")
    return p, "unknown recording format"


def _hapt_without_gyro(tmp):
    p = tmp / "acc_exp99_user99.txt"
    p.write_text("1.0 0.0 0.0\n" * 200)
    return p, "gyro_exp99_user99.txt: missing"


def _missing(tmp):
    return tmp / "nope.csv", "no such file"


@pytest.mark.parametrize("make", [_bad_csv, _empty_bin, _noise_bin, _unknown_suffix, _hapt_without_gyro, _missing])
def test_bad_recordings_are_rejected_clearly(bundle_dir, tmp_path, capsys, make):
    path, words = make(tmp_path)
    rc, _, stderr = replay([path, "--bundle", bundle_dir], capsys)
    assert rc == 2
    # The message names the file at fault (the recording, or the twin file it needs) and the problem.
    assert stderr.startswith("har-edge replay: error: ") and str(path.parent) in stderr and words in stderr
    assert "Traceback" not in stderr


def _copy(bundle_dir, tmp):
    dst = tmp / "bundle"
    shutil.copytree(bundle_dir, dst)
    return dst


def _corrupt_model(bundle_dir, tmp):
    b = _copy(bundle_dir, tmp)
    model = b / "model.int8.tflite"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    return b, "sha256"


def _truncated_json(bundle_dir, tmp):
    b = _copy(bundle_dir, tmp)
    (b / "bundle.json").write_text((b / "bundle.json").read_text()[:200])
    return b, "not valid JSON"


def _missing_model_file(bundle_dir, tmp):
    b = _copy(bundle_dir, tmp)
    (b / "model.int8.tflite").unlink()
    return b, "missing"


def _not_a_bundle(bundle_dir, tmp):
    (tmp / "empty").mkdir()
    return tmp / "empty", "bundle.json"


def _no_such_dir(bundle_dir, tmp):
    return tmp / "nowhere", "does not exist"


@pytest.mark.parametrize("make", [_corrupt_model, _truncated_json, _missing_model_file, _not_a_bundle, _no_such_dir])
def test_bad_bundles_are_rejected_clearly(bundle_dir, hapt_recording, tmp_path, capsys, make):
    bad, words = make(bundle_dir, tmp_path)
    rc, _, stderr = replay([hapt_recording, "--bundle", bad], capsys)
    assert rc == 2 and stderr.startswith("har-edge replay: error: ")
    assert words in stderr and "Traceback" not in stderr


@pytest.mark.parametrize("options, words", [
    (["--threshold", "1.5"], "[0, 1]"),
    (["--smoothing", "vote", "--votes", "5"], "1 <= k <= n"),
    (["--jsonl", "/nonexistent-dir/out.jsonl"], "--jsonl /nonexistent-dir/out.jsonl: the folder /nonexistent-dir does not exist"),
    (["--summary-json", "/nonexistent-dir/s.json"], "--summary-json /nonexistent-dir/s.json: the folder /nonexistent-dir does not exist"),
    (["--summary-json", "/proc/s.json"], "--summary-json /proc/s.json: cannot write in /proc"),  # read-only, even for root
    (["--summary-json", "{tmp}/s.txt"], "--summary-json {tmp}/s.txt: unknown file type '.txt'; use a name ending in .json"),
    (["--plot", "/nonexistent-dir/p.png"], "--plot /nonexistent-dir/p.png: the folder /nonexistent-dir does not exist"),
    (["--plot", "{tmp}/p.xyz"], "--plot {tmp}/p.xyz: unknown file type '.xyz'"),
    (["--mount-calibration", "{tmp}"], "--mount-calibration {tmp}: {tmp} is a directory; give a file name in it"),
    (["--jsonl", "{tmp}"], "--jsonl {tmp}: {tmp} is a directory"),
])
def test_bad_options_are_rejected_before_any_work(bundle_dir, hapt_recording, tmp_path, capsys, options, words):
    options = [o.replace("{tmp}", str(tmp_path)) for o in options]
    rc, stdout, stderr = replay([hapt_recording, "--bundle", bundle_dir, *options], capsys)
    # One line, exit 2, and nothing was replayed first (no window line, no counters).
    assert rc == 2 and stderr == f"har-edge replay: error: {stderr.split('error: ', 1)[1]}"
    assert words.replace("{tmp}", str(tmp_path)) in stderr and stderr.count("\n") == 1 and stdout == ""


@pytest.mark.parametrize("argv, message", [
    (["demo", "--speed", "0"], "har-edge demo: error: --speed 0: give times real time > 0\n"),
    (["demo", "--speed", "-1"], "har-edge demo: error: --speed -1: give times real time > 0\n"),
    (["demo", "--speed", "nan"], "har-edge demo: error: --speed nan: give times real time > 0\n"),
    (["run", "--port", "/dev/null", "--report-every", "-1"], "har-edge run: error: --report-every -1: give seconds >= 0\n"),
    (["run", "--port", "/dev/null", "--duration", "-1"], "har-edge run: error: --duration -1: give seconds > 0\n"),
    (["run", "--port", "/dev/null", "--stall-after", "0"], "har-edge run: error: --stall-after 0: give seconds > 0\n"),
    (["record", "--port", "/dev/null", "--out", "x.txt"],
     "har-edge record: error: --out x.txt: unknown file type '.txt'; use a name ending in .csv or .bin\n"),
    (["record", "--port", "/dev/null", "--out", "/nonexistent-dir/x.csv"],
     "har-edge record: error: --out /nonexistent-dir/x.csv: the folder /nonexistent-dir does not exist; "
     "create it or choose another path\n"),
])
def test_bad_numbers_and_paths_are_one_line_and_exit_2(argv, message, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2 and captured.err == message and captured.out == ""


def test_version_and_ports(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("har-edge 0.")
    assert main(["ports"]) == 0
    out = capsys.readouterr().out
    assert "looks like the IMU board" in out or "no serial ports found" in out


def test_port_auto_picks_the_one_imu_board_by_usb_id():
    from edge.sources import PortInfo, SourceError, find_imu_port

    uno = PortInfo("/dev/ttyACM0", "Arduino Uno", 0x2341, 0x0043, "7573530")
    other = PortInfo("/dev/ttyUSB0", "FT232R", 0x0403, 0x6001, None)
    assert find_imu_port([other, uno]) == "/dev/ttyACM0"
    assert "looks like the IMU board (Arduino Uno R3)" in uno.describe() and "0403:6001" in other.describe()
    with pytest.raises(SourceError, match="no port looks like the IMU board"):
        find_imu_port([other])
    with pytest.raises(SourceError, match="2 ports look like the IMU board"):
        find_imu_port([uno, PortInfo("/dev/ttyUSB1", "CH340", 0x1A86, 0x7523, None)])


def test_run_gives_up_on_a_missing_port_when_told(bundle_dir, tmp_path, capsys):
    rc = main(["run", "--port", str(tmp_path / "ttyACM9"), "--bundle", str(bundle_dir), "--connect-timeout", "0.5"])
    err = capsys.readouterr().err
    assert rc == 2 and "ttyACM9 is not there" in err and "gave up after 0.5 s" in err


# -- record and run against the virtual device ----------------------------------------------------

@pytest.mark.slow
def test_record_then_replay_equals_replay_of_the_source(bundle_dir, hapt_recording, tmp_path, capsys):
    from firmware_bridge.protocol import Sample
    from firmware_bridge.simulate import VirtualDevice

    # The wire carries float32: start from values a device could have sent.
    wire = [Sample(s.seq, s.t_us, *map(float, np.float32(s.values()))) for s in read_recording(hapt_recording).samples[:3000]]
    excerpt = tmp_path / "excerpt.csv"
    write_recording_csv(excerpt, wire)
    for suffix in (".csv", ".bin"):
        out = tmp_path / f"recorded{suffix}"
        with VirtualDevice(excerpt, speed=50.0, link=tmp_path / f"imu{suffix}") as device:
            rc = main(["record", "--port", device.port, "--out", str(out), "--no-model", "--duration", "3",
                       "--connect-timeout", "5"])
        assert rc == 0, capsys.readouterr().err
        recorded = read_recording(out)
        assert [s.values() for s in recorded.samples] == [s.values() for s in wire]
    rc_a, _, _ = replay([excerpt, "--bundle", bundle_dir, "--jsonl", tmp_path / "a.jsonl", "--quiet"], capsys)
    rc_b, _, _ = replay([tmp_path / "recorded.csv", "--bundle", bundle_dir, "--jsonl", tmp_path / "b.jsonl", "--quiet"], capsys)
    assert rc_a == rc_b == 0
    assert labels_of(read_jsonl(tmp_path / "a.jsonl")) == labels_of(read_jsonl(tmp_path / "b.jsonl"))


@pytest.mark.slow
def test_signals_during_shutdown_do_not_lose_the_calibration_or_the_counters(bundle_dir, hapt_recording, tmp_path):
    # The live page's server takes about half a second to close: a second signal used to land there,
    # escape the loop's finally and leave the mount calibration unsaved and the counters unprinted.
    from firmware_bridge.simulate import VirtualDevice

    out, calibration = tmp_path / "live.jsonl", tmp_path / "mount.json"
    with VirtualDevice(hapt_recording, speed=20.0, link=tmp_path / "imu", loop=True):
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--port", str(tmp_path / "imu"), "--bundle", str(bundle_dir),
             "--jsonl", str(out), "--quiet", "--web", "127.0.0.1:0", "--mount-calibration", str(calibration)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
            time.sleep(0.2)
        signal_until_exit(proc, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=5)
    assert proc.returncode == 0, stderr
    assert "already stopping" in stderr and "Traceback" not in stderr
    assert "interrupted; final counters: windows" in stderr
    assert f"saved to {calibration}" in stderr and json.loads(calibration.read_text())
    assert all(json.loads(line) for line in out.read_text().splitlines())


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])  # Ctrl-C, and systemd's stop
def test_run_sigint_flushes_prints_counters_and_exits_0(bundle_dir, hapt_recording, tmp_path, signum):
    from firmware_bridge.simulate import VirtualDevice

    out = tmp_path / "live.jsonl"
    with VirtualDevice(hapt_recording, speed=20.0, link=tmp_path / "imu", loop=True):
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--port", str(tmp_path / "imu"), "--bundle", str(bundle_dir),
             "--jsonl", str(out), "--quiet"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONFAULTHANDLER": "1"})  # a hang below dumps every thread's stack
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):  # "connected" + 5 windows
            time.sleep(0.2)
        proc.send_signal(signum)
        try:
            stdout, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGABRT)
            stdout, stderr = proc.communicate()
            pytest.fail(f"har-edge run did not exit 20 s after signal {signum}; its threads:\n{stderr[-6000:]}")
    assert proc.returncode == 0, stderr
    assert "interrupted; final counters: windows" in stderr and "Traceback" not in stderr
    objects = [json.loads(line) for line in out.read_text().splitlines()]  # every line complete
    statuses = [o for o in objects if o.get("type") == "status"]
    lines = [o for o in objects if "type" not in o]  # window lines carry no type (unchanged for consumers)
    assert [s["event"] for s in statuses] == ["connected"] and statuses[0]["message"] == f"reading {tmp_path / 'imu'}"
    assert len(lines) >= 5 and all(line["label"] for line in lines)
    ends = [line["sample_end"] for line in lines]
    assert ends == list(range(128, 128 + 64 * len(ends), 64))


@pytest.mark.slow
def test_bench_runs_and_reports_every_figure(bundle_dir, hapt_recording, tmp_path, capsys):
    """A smoke run of `har-edge bench` (small counts): the figures are there; no time is asserted."""
    excerpt = tmp_path / "excerpt.csv"
    write_recording_csv(excerpt, read_recording(hapt_recording).samples[:3000])
    rc = main(["bench", "--bundle", str(bundle_dir), "--recording", str(excerpt), "--windows", "30",
               "--e2e-seconds", "5", "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    figures = json.loads(out)
    assert set(figures["inference"]) == {"tflite-int8", "tflite-fp32", "onnx-int8", "onnx-fp32"}
    assert all(row["n"] == 30 and row["p99_ms"] >= row["median_ms"] > 0 for row in figures["inference"].values())
    assert "torch" not in figures  # the torch baseline is scripts/bench_torch.py, outside the edge package
    assert figures["replay"]["samples"] == 3000 and figures["replay"]["windows"] == len(range(128, 3001, 64))
    assert figures["stages"]["windows"] > 0 and figures["stages"]["inference"]["us_per_window"] > 0
    e2e = figures["end_to_end"]
    assert e2e["windows"] >= 1 and e2e["peak_rss_mib"] > 10


@pytest.mark.slow
def test_demo_streams_the_example_through_a_virtual_device_like_replay(bundle_dir, tmp_path, capsys):
    """The quick start's demo: the example recording played at 100x over a pty gives replay's labels."""
    from edge.paths import EXAMPLE_RECORDING

    rc = main(["demo", "--speed", "100", "--quiet", "--bundle", str(bundle_dir), "--jsonl", str(tmp_path / "demo.jsonl"),
               "--summary-json", str(tmp_path / "demo.json")])
    out = capsys.readouterr().out
    assert rc == 0
    assert "== summary ==" in out and "accuracy against the true labels" in out and "p99" in out
    rc, _, _ = replay([EXAMPLE_RECORDING, "--bundle", bundle_dir, "--quiet", "--jsonl", tmp_path / "replay.jsonl"], capsys)
    assert rc == 0
    demo, replayed = read_jsonl(tmp_path / "demo.jsonl"), read_jsonl(tmp_path / "replay.jsonl")
    assert len(demo) == len(replayed) == (14100 - 128) // 64 + 1
    assert labels_of(demo) == labels_of(replayed)
    summary = json.loads((tmp_path / "demo.json").read_text())
    assert summary["counters"]["gaps"]["lost_samples"] == 0 and summary["counters"]["decoder"]["crc_errors"] == 0
    assert summary["truth"]["scored_windows"] > 100
    assert sum(summary["labels"].values()) == len(demo)


def with_mount(bundle_dir: Path, tmp_path: Path, mount) -> Path:
    """A copy of the bundle whose bundle.json says the model wants mount-aligned windows."""
    dst = tmp_path / "mount_bundle"
    shutil.copytree(bundle_dir, dst)
    data = json.loads((dst / "bundle.json").read_text())
    data["mount"] = mount
    (dst / "bundle.json").write_text(json.dumps(data))
    return dst


@pytest.mark.slow
def test_mount_calibration_is_learnt_saved_and_reused(bundle_dir, hapt_recording, tmp_path, capsys):
    bundle = with_mount(bundle_dir, tmp_path, {"canonical": [0.979, -0.185, -0.086], "moving_rms_g": 0.2,
                                                "min_windows": 20})
    wearer = tmp_path / "wearer.json"
    rc, _, err = replay([hapt_recording, "--bundle", bundle, "--quiet", "--mount-calibration", wearer,
                         "--jsonl", tmp_path / "first.jsonl"], capsys)
    assert rc == 0, err
    saved = json.loads(wearer.read_text())
    assert saved["windows"] >= 20 and "mount calibrated from 20 moving windows" in err and "saved to" in err
    assert "mount not calibrated yet" in err and "walked for about 26 s" in err
    # Second session: calibrated from its first window, so early windows may be labelled differently.
    rc, _, err = replay([hapt_recording, "--bundle", bundle, "--quiet", "--mount-calibration", wearer,
                         "--jsonl", tmp_path / "second.jsonl"], capsys)
    assert rc == 0 and "mount calibrated from" not in err and "not calibrated yet" not in err
    assert json.loads(wearer.read_text())["windows"] == 2 * saved["windows"]
    wearer.write_text("{not json")
    rc, _, err = replay([hapt_recording, "--bundle", bundle, "--mount-calibration", wearer], capsys)
    assert rc == 2 and "wearer.json" in err and "calibration's own file" in err and "Traceback" not in err


def test_a_bad_mount_in_the_bundle_is_named(bundle_dir, hapt_recording, tmp_path, capsys):
    bundle = with_mount(bundle_dir, tmp_path, {"canonical": [0, 0, 0]})
    rc, _, err = replay([hapt_recording, "--bundle", bundle], capsys)
    assert rc == 2 and "bundle.json" in err and "mount" in err and "re-export" in err


def test_the_first_screen_shows_only_what_the_product_says(tmp_path):
    """No TFLite delegate INFO line, no warnings of libraries: every stderr line is har-edge's own."""
    from edge.paths import EXAMPLE_RECORDING

    run = subprocess.run([sys.executable, "-m", "edge.cli", "replay", str(EXAMPLE_RECORDING), "--quiet"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines and all(line.startswith("har-edge: ") for line in lines), lines


EXAMPLE = REPO / "edge" / "examples" / "user01_exp01.csv"


def test_an_output_that_is_the_recording_read_is_refused_and_the_recording_kept(bundle_dir, tmp_path, capsys):
    recording = tmp_path / "walk.csv"
    shutil.copy(EXAMPLE, recording)
    before = recording.read_bytes()
    for argv in (["replay", str(recording), "--jsonl", str(recording)],
                 ["replay", str(recording), "--jsonl", str(tmp_path / "." / "walk.csv")],  # the same file, spelt otherwise
                 ["label", str(recording), str(recording), "--out", str(recording)]):
        rc = main([*argv, "--bundle", str(bundle_dir)] if argv[0] == "replay" else argv)
        err = capsys.readouterr().err
        assert rc == 2 and "is the file this command reads" in err and err.count("\n") == 1, err
        assert recording.read_bytes() == before


def test_record_keeps_an_existing_file_when_the_port_never_opens(tmp_path, capsys):
    out = tmp_path / "yesterday.csv"
    shutil.copy(EXAMPLE, out)
    before = out.read_bytes()
    rc = main(["record", "--port", str(tmp_path / "ttyACM9"), "--no-model", "--out", str(out),
               "--connect-timeout", "0.3"])
    err = capsys.readouterr().err
    assert rc == 2 and "gave up after 0.3 s" in err and "Traceback" not in err
    assert out.read_bytes() == before  # the old recording is still there: nothing came to replace it


def test_a_new_recording_file_is_written_and_replaced_only_by_data(tmp_path):
    from firmware_bridge.recording import RecordingWriter

    fresh = tmp_path / "new.csv"
    writer = RecordingWriter(fresh)  # a new file starts with its header, so it replays (empty) at once
    writer.close()
    assert fresh.read_text() == "seq,t_us,ax,ay,az,gx,gy,gz\n" and writer.replaced
    old = tmp_path / "old.csv"
    shutil.copy(EXAMPLE, old)
    writer = RecordingWriter(old, sync_every_s=0.0)
    assert old.read_bytes() == EXAMPLE.read_bytes() and not writer.replaced
    writer.write_rows([5], [100000], [[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])  # the first data: now it is replaced
    writer.close()
    assert writer.replaced and read_recording(old).samples[0].seq == 5 and len(read_recording(old)) == 1


def test_a_timed_run_whose_port_never_opened_fails(bundle_dir, tmp_path, capsys):
    rc = main(["run", "--port", str(tmp_path / "ttyACM9"), "--bundle", str(bundle_dir), "--duration", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and f"{tmp_path / 'ttyACM9'} never opened during the run (1 s)" in err and "Traceback" not in err


def test_enrolment_does_not_overwrite_a_file_that_is_not_a_mount_calibration(bundle_dir, tmp_path, capsys):
    other = tmp_path / "notes.json"
    other.write_text('{"mine": true}\n')
    rc = main(["enroll", "--recording", str(EXAMPLE), "--profile", str(tmp_path / "p.json"),
               "--mount-calibration", str(other), "--bundle", str(bundle_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "not a mount calibration" in err and "calibration's own file" in err, err
    assert other.read_text() == '{"mine": true}\n' and not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("segments, words", [
    ("start,end,label\n0,nan,WALKING\n", "0,nan: not a number; fix or delete that row (a span needs its start and end"),
    ("start,end,label\n0,10,\n", "the label is empty; give a class name"),
])
def test_bad_segments_are_one_line(tmp_path, capsys, segments, words):
    (tmp_path / "s.csv").write_text(segments)
    rc = main(["label", str(EXAMPLE), str(tmp_path / "s.csv"), "--out", str(tmp_path / "out.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and words in err and err.count("\n") == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("argv, words", [
    (["monitor", "--mqtt", "mqtt://127.0.0.1:1", "--stats-json", "/nonexistent-dir/m.json"],
     "--stats-json /nonexistent-dir/m.json: the folder /nonexistent-dir does not exist"),
    (["monitor", "--mqtt", "mqtt://127.0.0.1:1", "--stats-json", "m.txt"], "--stats-json m.txt: unknown file type '.txt'"),
    (["bench", "--e2e-seconds", "2"], "--e2e-seconds 2: the live run needs at least 5 s"),
    (["monitor", "--mqtt", "mqtt://127.0.0.1:1", "--refresh", "nan"], "--refresh nan: give seconds > 0"),
    (["replay", str(EXAMPLE), "--device-id", "alice"], "--device-id without --mqtt URL: it sets how labels are published"),
    (["replay", str(EXAMPLE), "--mount-calibration", "wearer.csv"], "--mount-calibration wearer.csv: unknown file type"),
    (["replay", str(EXAMPLE), "--smoothing", "vote", "--votes", "5"], "--smoothing vote --smooth-windows 3 --votes 5"),
])
def test_more_bad_options_are_refused_before_any_work(argv, words, capsys):
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 2 and words in captured.err and captured.err.count("\n") == 1 and captured.out == "", captured.err


def test_a_guided_step_too_short_to_enrol_is_refused(bundle_dir, tmp_path, capsys):
    rc = main(["enroll", "--port", str(tmp_path / "ttyACM9"), "--profile", str(tmp_path / "p.json"),
               "--step-seconds", "8", "--bundle", str(bundle_dir)])
    err = capsys.readouterr().err
    assert rc == 2 and "--step-seconds 8: give between 12 and 600 seconds per posture" in err, err


def test_an_interrupted_realtime_replay_counts_the_samples_that_reached_the_pipeline(bundle_dir, tmp_path):
    summary = tmp_path / "s.json"
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "replay", str(EXAMPLE), "--realtime", "--quiet",
                             "--bundle", str(bundle_dir), "--summary-json", str(summary)],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4.0)  # a few windows at 50 Hz, far from the file's 14,000 samples
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    figures = json.loads(summary.read_text())
    delivered = figures["counters"]["gaps"]["samples"]
    assert proc.returncode == 0 and "interrupted" in stderr, stderr
    assert figures["samples"] == delivered and 0 < delivered < 1000  # not the block the reader had parsed ahead
    assert f"windows from {delivered} samples" in stderr


def test_labels_that_are_not_the_models_classes_are_named_and_not_scored(bundle_dir, tmp_path, capsys):
    renamed = tmp_path / "lower.csv"
    renamed.write_text(EXAMPLE.read_text().replace(",STANDING\n", ",standing\n"))
    summary = tmp_path / "s.json"
    assert main(["replay", str(EXAMPLE), "--bundle", str(bundle_dir), "--quiet", "--summary-json", str(summary)]) == 0
    whole = json.loads(summary.read_text())["truth"]
    capsys.readouterr()
    assert main(["replay", str(renamed), "--bundle", str(bundle_dir), "--quiet", "--summary-json", str(summary)]) == 0
    err = capsys.readouterr().err
    truth = json.loads(summary.read_text())["truth"]
    standing = truth["not_model_classes"]["standing"]
    assert "warning: labels that are not classes of this model, not scored: standing" in err
    assert standing > 5 and truth["scored_windows"] == whole["scored_windows"] - standing  # the rest scored as before
    assert main(["enroll", "--recording", str(renamed), "--profile", str(tmp_path / "p.json"),
                 "--bundle", str(bundle_dir)]) == 0
    assert "has labels that are not classes of this model: standing" in capsys.readouterr().err


def test_a_recording_whose_labels_score_nothing_says_why(bundle_dir, hapt_recording, tmp_path, capsys):
    """Real HAPT samples whose labels.txt has no row for the experiment, or is not there, and a CSV whose
    labels never hold a whole window: each replay says why it printed no accuracy."""
    raw = tmp_path / "RawData"
    raw.mkdir()
    for name in ("acc_exp01_user01.txt", "gyro_exp01_user01.txt"):  # 3,000 of the experiment's samples
        (raw / name).write_text("".join((hapt_recording.parent / name).read_text().splitlines(True)[:3000]))
    rows = (hapt_recording.parent / "labels.txt").read_text().splitlines(True)
    (raw / "labels.txt").write_text("".join(r for r in rows if not r.startswith("1 1 ")))
    cases = [(raw / "acc_exp01_user01.txt", "labels.txt beside it has no row for this experiment")]
    sparse = tmp_path / "sparse.csv"
    header, *lines = EXAMPLE.read_text().splitlines()
    unlabelled = [line.rsplit(",", 1)[0] for line in lines[:3000]]  # seq,t_us,ax,...,gz
    sparse.write_text(header + "\n" + "".join(f"{row},{'' if i % 100 else 'SITTING'}\n" for i, row in enumerate(unlabelled)))
    cases.append((sparse, "labelled samples hold no whole window of one activity"))
    for recording, words in cases:
        assert main(["replay", str(recording), "--bundle", str(bundle_dir), "--quiet"]) == 0
        err = capsys.readouterr().err
        assert f"note: {recording}: " in err and words in err and "nothing was scored" in err, err
    (raw / "labels.txt").unlink()
    assert main(["replay", str(raw / "acc_exp01_user01.txt"), "--bundle", str(bundle_dir), "--quiet"]) == 0
    assert "no labels.txt beside it, so nothing was scored" in capsys.readouterr().err
    assert main(["replay", str(EXAMPLE), "--bundle", str(bundle_dir), "--quiet"]) == 0
    assert "nothing was scored" not in capsys.readouterr().err  # a labelled recording is scored, no note


@pytest.mark.parametrize("port, words", [("{tmp}", "is a folder, not a serial port"),
                                         ("/dev/null", "is not a serial port"),
                                         ("{tmp}/ttyACM9", "is not there")])
def test_a_port_that_is_no_serial_port_is_named_for_what_it_is(tmp_path, port, words):
    import serial

    from edge.sources import describe_serial_error

    port = port.replace("{tmp}", str(tmp_path))
    with pytest.raises(Exception) as error:  # pyserial's own errors, opening the real path
        serial.serial_for_url(port, baudrate=115200, timeout=0.2, exclusive=True)
    assert words in describe_serial_error(port, error.value)


def test_a_recording_and_segments_saved_with_a_byte_order_mark_are_read(bundle_dir, tmp_path, capsys):
    marked = tmp_path / "excel.csv"
    marked.write_bytes(b"\xef\xbb\xbf" + EXAMPLE.read_bytes())  # what Excel's "CSV UTF-8" writes
    plain, bom = tmp_path / "plain.jsonl", tmp_path / "bom.jsonl"
    assert main(["replay", str(EXAMPLE), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(plain)]) == 0
    assert main(["replay", str(marked), "--bundle", str(bundle_dir), "--quiet", "--jsonl", str(bom)]) == 0
    labels = [[(r["sample_end"], r["label"]) for r in read_jsonl(p) if "type" not in r] for p in (plain, bom)]
    assert labels[0] == labels[1] and len(labels[0]) > 100
    assert len(read_recording(marked)) == len(read_recording(EXAMPLE))
    (tmp_path / "s.csv").write_bytes(b"\xef\xbb\xbfstart,end,label\n0,500,STANDING\n")
    assert main(["label", str(EXAMPLE), str(tmp_path / "s.csv"), "--out", str(tmp_path / "out.csv")]) == 0
    capsys.readouterr()


def test_label_says_when_it_replaces_labels_or_labels_nothing(tmp_path, capsys):
    (tmp_path / "none.csv").write_text("start,end,label\n")
    assert main(["label", str(EXAMPLE), str(tmp_path / "none.csv"), "--out", str(tmp_path / "out.csv")]) == 0
    err = capsys.readouterr().err
    assert "has no spans: every sample" in err and "had labels of its own" in err  # the example is labelled
    assert read_recording(tmp_path / "out.csv").labels is None or not any(read_recording(tmp_path / "out.csv").labels)
