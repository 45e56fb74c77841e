"""The virtual device: a reader on its pty gets what was sent, minus exactly what was injected."""
from __future__ import annotations

import os
import signal
import struct
import subprocess
import sys
import time

import pytest
import serial

from firmware_bridge.protocol import CsvLineDecoder, FrameDecoder, Hello, Sample
from firmware_bridge.recording import read_recording
from firmware_bridge.simulate import Faults, SimulationError, VirtualDevice

from services import signal_until_exit

pytestmark = pytest.mark.skipif(not hasattr(os, "openpty"), reason="pseudo-terminals need a POSIX system")


def f32(x: float) -> float:
    return struct.unpack("<f", struct.pack("<f", x))[0]


@pytest.fixture(scope="module")
def walk(hapt_user1_dir):
    """600 real samples (12 s) of HAPT experiment 1, user 1."""
    rec = read_recording(hapt_user1_dir / "RawData" / "acc_exp01_user01.txt")
    rec.samples = rec.samples[1200:1800]
    rec.labels = None
    return rec


def read_port(port: str, device: VirtualDevice, decoder, until_finished=True, max_seconds=60.0):
    """Reads the port like a host would, until the device has finished (or the port vanished)."""
    frames = []
    deadline = time.monotonic() + max_seconds
    with serial.Serial(port, 115200, timeout=0.05) as link:
        while time.monotonic() < deadline:
            try:
                data = link.read(65536)
            except serial.SerialException:
                break  # the device closed the port
            frames += decoder.feed(data)
            if not data and until_finished and device.finished:
                break
    return frames


def samples_of(frames):
    return [f for f in frames if isinstance(f, Sample)]


def test_plays_the_recording_as_frames(walk):
    with VirtualDevice(walk, speed=100) as dev:
        time.sleep(0.3)  # the reader comes late: nothing may be lost meanwhile
        decoder = FrameDecoder()
        frames = read_port(dev.port, dev, decoder)
        dev.wait(10)
    assert isinstance(frames[0], Hello) and frames[0].rate_hz == 50 and frames[0].version == 1
    samples = samples_of(frames)
    assert [s.seq for s in samples] == list(range(600))
    assert [s.t_us for s in samples[:3]] == [0, 20000, 40000]
    assert [s.values() for s in samples] == [tuple(f32(v) for v in s.values()) for s in walk.samples]
    # HELLO at start and every 5 s of stream time: at 0 s, 5 s and 10 s of a 12 s recording.
    assert sum(isinstance(f, Hello) for f in frames) == 3 == dev.injected.hellos_sent
    assert decoder.counters.garbage_bytes == 0 and decoder.counters.lost_samples == 0


def test_faults_match_what_the_receiver_counts(walk):
    dev = VirtualDevice(walk, Faults(drop=0.03, corrupt=0.03, duplicate=0.03, garbage=0.03, seed=7), speed=200)
    with dev:
        decoder = FrameDecoder()
        samples = samples_of(read_port(dev.port, dev, decoder))
    inj, c = dev.injected, decoder.counters
    assert min(inj.dropped, inj.corrupted, inj.duplicated, inj.garbage_bursts) > 5
    assert inj.samples_total == 600 and inj.samples_sent + inj.dropped + inj.corrupted == 600
    lost = set(inj.lost_indices)
    assert [s.seq for s in samples] == [i for i in range(600) if i not in lost]
    inside = [i for i in lost if samples[0].seq < i < samples[-1].seq]
    assert c.lost_samples == len(inside)
    assert c.duplicates == inj.duplicated
    # A random burst is almost always bad COBS, rarely good COBS with a bad CRC: count them together.
    assert c.crc_errors + c.malformed == inj.corrupted + inj.garbage_bursts
    assert c.crc_errors >= inj.corrupted
    assert c.garbage_bytes == inj.garbage_bytes + inj.corrupted_bytes


def test_same_seed_same_faults(walk):
    counts = []
    for _ in range(2):
        with VirtualDevice(walk, Faults(drop=0.05, corrupt=0.05, seed=11), speed=400) as dev:
            read_port(dev.port, dev, FrameDecoder())
        counts.append((dev.injected.as_dict(), dev.injected.lost_indices))
    assert counts[0] == counts[1]


def test_text_mode(walk):
    with VirtualDevice(walk, Faults(corrupt=0.05, garbage=0.05, seed=3), speed=200, text=True) as dev:
        decoder = CsvLineDecoder()
        samples = read_port(dev.port, dev, decoder)
    inj = dev.injected
    assert inj.corrupted > 0 and inj.garbage_bursts > 0 and inj.hellos_sent == 0
    assert len(samples) == inj.samples_sent == 600 - inj.corrupted
    assert decoder.counters.bad_lines == inj.corrupted + inj.garbage_bursts
    lost = set(inj.lost_indices)
    kept = [s for i, s in enumerate(walk.samples) if i not in lost]
    assert [got.t_us for got in samples] == [(i * 20) * 1000 for i in range(600) if i not in lost]
    for got, sent in zip(samples, kept):
        assert got.values() == pytest.approx(sent.values(), rel=1e-5, abs=1e-6)


@pytest.mark.slow
def test_disconnect_reconnect_moves_the_link(walk, tmp_path):
    link = tmp_path / "serial" / "by-id" / "usb-HAR_IMU-if00"
    dev = VirtualDevice(walk, Faults(disconnect_every=4.0, disconnect_for=1.0), speed=50, link=link)
    first_pty = dev.start()
    try:
        assert os.readlink(link) == first_pty
        decoder = FrameDecoder()  # one decoder across reconnects: the outage shows as a seq gap
        frames, opened, missing = [], [], 0
        deadline = time.monotonic() + 60
        while not dev.finished and time.monotonic() < deadline:
            try:
                target = os.readlink(link)  # the kernel may reuse the pty number
                frames += read_port(str(link), dev, decoder)
            except (FileNotFoundError, serial.SerialException):
                # The port is gone, or went between readlink and open (a race the host
                # cannot avoid): a host retries.
                missing += 1
                time.sleep(0.01)
                continue
            opened.append(target)
        dev.wait(10)
    finally:
        dev.stop()
    inj = dev.injected
    # Disconnects at stream seconds 4 and 9 (every 4 s of connection, 1 s away each time).
    assert inj.disconnects == 2 and inj.lost_in_disconnect == 100 and inj.connections == 3
    assert len(opened) >= 3 and missing > 0 and not link.exists()
    samples = samples_of(frames)
    assert len(samples) == 500 and decoder.counters.lost_samples == 100 and decoder.counters.seq_gaps == 2
    assert sum(isinstance(f, Hello) for f in frames) >= 3  # every new connection starts with HELLO


def test_stall_loses_nothing(walk):
    with VirtualDevice(walk, Faults(stall_at=2.0, stall_for=5.0), speed=100) as dev:
        decoder = FrameDecoder()
        samples = samples_of(read_port(dev.port, dev, decoder))
    assert dev.injected.stalls == 1
    assert [s.seq for s in samples] == list(range(600))


def test_loop_keeps_counting(walk):
    dev = VirtualDevice(walk.samples[:50], speed=400, loop=True)
    with dev:
        decoder = FrameDecoder()
        with serial.Serial(dev.port, 115200, timeout=0.05) as port:
            samples = []
            while len(samples) < 180:
                samples += samples_of(decoder.feed(port.read(4096)))
    assert [s.seq for s in samples[:180]] == list(range(180))
    assert samples[120].values() == samples[20].values()


@pytest.mark.parametrize("kwargs, message", [
    ({"drop": 1.5}, "--drop 1.5 is not a probability"),
    ({"drop": float("nan")}, "--drop nan is not a probability"),
    ({"disconnect_every": -1}, "--disconnect-every -1 must be positive"),
    ({"stall_for": -2}, "--stall-for -2 must be >= 0"),
    ({"reboot_at": (5.0, float("inf"))}, "--reboot-at inf must be >= 0"),
])
def test_invalid_faults(kwargs, message):
    with pytest.raises(SimulationError, match=message):
        Faults(**kwargs)


@pytest.mark.parametrize("speed", [0, -1, float("nan")])
def test_invalid_speed(walk, speed):
    with pytest.raises(SimulationError, match=f"--speed {speed} must be positive"):
        VirtualDevice(walk, speed=speed)


def test_cli_simulate_prints_the_pty_and_ends_with_the_recording(walk, tmp_path):
    from firmware_bridge.recording import write_recording_csv

    path = tmp_path / "walk.csv"
    write_recording_csv(path, walk.samples[:200])
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.cli", "simulate", str(path), "--speed", "100", "--drop", "0.1", "--seed", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        pty = proc.stdout.readline().strip()
        assert pty.startswith("/dev/")
        decoder = FrameDecoder()
        with serial.Serial(pty, 115200, timeout=0.1) as port:
            samples = []
            while True:
                try:
                    data = port.read(4096)
                except serial.SerialException:
                    break
                samples += samples_of(decoder.feed(data))
                if not data and proc.poll() is not None:
                    break
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "dropped" in err and 150 < len(samples) < 200
    assert decoder.counters.lost_samples == 200 - len(samples) - (199 - samples[-1].seq) - samples[0].seq


@pytest.mark.slow
def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    for args, message in ([["simulate", str(tmp_path / "none.csv")], "no such file"],
                          [["simulate", str(tmp_path)], "is a directory"],
                          [["simulate", str(tmp_path), "--corrupt", "7"], "--corrupt 7.0 is not a probability"],
                          [["simulate", str(tmp_path), "--reboot-at", "-3"], "--reboot-at -3.0 must be >= 0"],
                          [["decode"], "give either a capture FILE or --port PORT"],
                          [["decode", "--port", str(tmp_path / "ttyX")], "cannot open"]):
        run = subprocess.run([sys.executable, "-m", "firmware_bridge.cli", *args], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr


def test_cli_simulate_stops_on_sigterms_and_removes_the_link(walk, tmp_path):
    from firmware_bridge.recording import write_recording_csv

    path, link = tmp_path / "walk.csv", tmp_path / "imu"
    write_recording_csv(path, walk.samples[:100])
    proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.cli", "simulate", str(path), "--loop", "--speed", "10",
                             "--link", str(link)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "(link: " in proc.stdout.readline()
        decoder = FrameDecoder()
        with serial.Serial(str(link), 115200, timeout=0.1) as port:
            samples = []
            while len(samples) < 20:
                samples += samples_of(decoder.feed(port.read(4096)))
        signal_until_exit(proc, signal.SIGTERM, every_s=0.02, timeout_s=20)  # a repeated stop must not cut the clean-up short
        _, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 130 and "injected:" in err and "Traceback" not in err
    assert not link.exists() and not link.is_symlink()


def stream_bytes(stream) -> bytes:
    from firmware_bridge.simulate import Chunk

    return b"".join(step.data for step in stream if isinstance(step, Chunk))


def test_fault_stream_is_pure_seeded_and_its_counts_are_what_a_decoder_finds(walk):
    from firmware_bridge.simulate import FaultStream

    values = [s.values() for s in walk.samples]
    faults = Faults(drop=0.03, corrupt=0.03, duplicate=0.03, garbage=0.03, seed=5)
    first, second = FaultStream(values, faults), FaultStream(values, faults)
    data = stream_bytes(first)
    assert data == stream_bytes(second) and first.injected == second.injected
    decoder = FrameDecoder()
    samples = samples_of(decoder.feed(data))
    inj, c = first.injected, decoder.counters
    assert [s.seq for s in samples] == [i for i in range(600) if i not in set(inj.lost_indices)]
    assert c.duplicates == inj.duplicated and c.hellos == inj.hellos_sent == 3
    assert c.garbage_bytes == inj.garbage_bytes + inj.corrupted_bytes
    assert c.crc_errors + c.malformed == inj.corrupted + inj.garbage_bursts


@pytest.mark.parametrize("at_s", [2.0, 7.0])  # seq 100 (a reboot within 256 samples of boot) and seq 350
def test_reboot_keeps_the_port_and_starts_seq_and_time_again_after_a_boot_hello(walk, at_s):
    from firmware_bridge.simulate import FaultStream

    stream = FaultStream([s.values() for s in walk.samples], Faults(reboot_at=(at_s,)))
    frames = FrameDecoder().feed(stream_bytes(stream))
    at = int(at_s * 50)
    samples = samples_of(frames)
    assert len(samples) == 600 and stream.injected.reboots == 1
    assert [s.seq for s in samples] == list(range(at)) + list(range(600 - at))
    assert samples[at].t_us == 0 and samples[at].values() == pytest.approx(walk.samples[at].values(), rel=1e-6)
    assert isinstance(frames[frames.index(samples[at]) - 1], Hello)  # the boot HELLO comes first


def test_cli_decode_of_a_capture_writes_its_samples_and_bytes(hapt_user1_dir, tmp_path):
    """A real capture (3000 HAPT samples as frames, a HELLO, line noise between; 90 kB: more than one read) is
    decoded to a recording CSV that holds exactly its samples, and copied byte for byte to a .bin."""
    from firmware_bridge.cli import main
    from firmware_bridge.protocol import encode_hello, encode_sample

    rec = read_recording(hapt_user1_dir / "RawData" / "acc_exp01_user01.txt")
    sent = [Sample(s.seq, s.t_us, *map(f32, s.values())) for s in rec.samples[:3000]]
    capture = encode_hello(sensor="test") + b"".join(
        encode_sample(s) + (b"\x13\x37noise\x00" if i % 500 == 250 else b"") for i, s in enumerate(sent))
    path = tmp_path / "capture.bin"
    path.write_bytes(capture)
    assert len(capture) > 65536
    assert main(["decode", str(path), "--out", str(tmp_path / "decoded.csv"), "--quiet"]) == 0
    assert read_recording(tmp_path / "decoded.csv").samples == sent
    assert main(["decode", str(path), "--out", str(tmp_path / "copy.bin"), "--quiet"]) == 0
    assert (tmp_path / "copy.bin").read_bytes() == capture
    assert main(["decode", str(path), "--out", str(tmp_path / "first.bin"), "--quiet", "--count", "10"]) == 0
    first = (tmp_path / "first.bin").read_bytes()  # the chunks read until the 10th sample, whole
    assert 0 < len(first) < len(capture) and capture.startswith(first)
    assert main(["decode", str(path), "--out", str(tmp_path / "no" / "such.csv")]) == 2


@pytest.mark.slow
def test_cli_decode_of_a_port_writes_as_it_goes_and_survives_sigkill(walk, tmp_path):
    """On a real pty at 50 Hz, `decode --port --out` has the samples on disk while it runs (synced every
    second), and what a SIGKILL leaves replays: the samples sent, in order, all but the last second."""
    from firmware_bridge.recording import write_recording_csv

    excerpt, out, link = tmp_path / "walk.csv", tmp_path / "decoded.csv", tmp_path / "imu"
    write_recording_csv(excerpt, walk.samples)
    with VirtualDevice(excerpt, speed=1.0, link=link) as device:
        proc = subprocess.Popen([sys.executable, "-m", "firmware_bridge.cli", "decode", "--port", str(link),
                                 "--out", str(out), "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            on_disk, deadline = 0, time.monotonic() + 60
            while on_disk < 100 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
                on_disk = out.read_text().count("\n") - 1 if out.exists() else 0  # rows below the header
            assert on_disk >= 100 and proc.poll() is None  # on disk while the decoder still runs
            sent = device.injected.samples_sent
            proc.send_signal(signal.SIGKILL)  # no handler, no flush, no close
            proc.wait(timeout=10)
        finally:
            proc.kill()
    recorded = read_recording(out).samples
    assert len(recorded) >= on_disk and [s.seq for s in recorded] == list(range(len(recorded)))  # the device counts from 0
    assert [s.values() for s in recorded] == [tuple(map(f32, s.values())) for s in walk.samples[:len(recorded)]]
    assert sent - len(recorded) <= 50 + 10  # at most the last second (and the frames in flight) is missing
