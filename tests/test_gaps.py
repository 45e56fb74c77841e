"""Gap handling on real IMU samples (HAPT user 1) with injected faults."""

from __future__ import annotations

import numpy as np
import pytest

from edge.gaps import SEQ_MODULO, T_US_MODULO, GapConfig, GapHandler, invalid_rows, merge_segments


@pytest.fixture(scope="module")
def raw(hapt_user1_dir) -> np.ndarray:
    """3000 real samples (60 s): acc in g, gyro in rad/s, (3000, 6) float64."""
    folder = hapt_user1_dir / "RawData"
    acc = np.loadtxt(folder / "acc_exp01_user01.txt")[:3000]
    gyro = np.loadtxt(folder / "gyro_exp01_user01.txt")[:3000]
    return np.concatenate([acc, gyro], axis=1)


def stream(n: int, first_seq: int = 0, rate_hz: float = 50.0, first_t: int = 0):
    """seq and t_us of a device sampling at rate_hz, both wrapping like on the wire."""
    seq = (first_seq + np.arange(n)) % SEQ_MODULO
    t_us = (first_t + np.round(np.arange(n) * 1e6 / rate_hz).astype(np.int64)) % T_US_MODULO
    return seq.astype(np.int64), t_us


def feed(handler: GapHandler, seq, t_us, raw, chunk: int):
    segments = []
    for i in range(0, len(seq), chunk):
        segments += handler.push(seq[i:i + chunk], t_us[i:i + chunk], raw[i:i + chunk])
    return merge_segments(segments)


@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_clean_stream_passes_unchanged_in_any_chunking(raw, chunk):
    seq, t_us = stream(len(raw), first_seq=65000)  # wraps past 65535 inside the stream
    handler = GapHandler()
    segments = feed(handler, seq, t_us, raw, chunk)
    assert len(segments) == 1 and segments[0].start == 0 and segments[0].reset
    np.testing.assert_array_equal(segments[0].raw, raw)
    c = handler.counters
    assert (c.samples, c.lost_samples, c.duplicates, c.long_gaps, c.device_restarts) == (len(raw), 0, 0, 0, 0)


@pytest.mark.parametrize("missing", [1, 3, 5])
def test_short_gap_is_interpolated_linearly(raw, missing):
    seq, t_us = stream(len(raw))
    keep = np.ones(len(raw), bool)
    keep[1000:1000 + missing] = False
    handler = GapHandler()
    segments = feed(handler, seq[keep], t_us[keep], raw[keep], chunk=64)
    assert len(segments) == 1 and len(segments[0].raw) == len(raw)
    out = segments[0].raw
    np.testing.assert_array_equal(out[keep], raw[keep])
    before, after = raw[999], raw[1000 + missing]
    for j in range(missing):
        expected = before + (after - before) * (j + 1) / (missing + 1)
        np.testing.assert_allclose(out[1000 + j], expected, rtol=1e-12)
    c = handler.counters
    assert (c.short_gaps, c.interpolated_samples, c.lost_samples, c.long_gaps) == (1, missing, missing, 0)


def test_longer_gap_resets_at_the_right_stream_position(raw):
    seq, t_us = stream(len(raw))
    keep = np.ones(len(raw), bool)
    keep[1000:1006] = False  # 6 samples = 120 ms: one more than may be bridged
    handler = GapHandler()
    segments = feed(handler, seq[keep], t_us[keep], raw[keep], chunk=1)
    assert [(s.start, len(s.raw), s.reset) for s in segments] == [(0, 1000, True), (1006, len(raw) - 1006, True)]
    np.testing.assert_array_equal(segments[1].raw, raw[1006:])
    assert (handler.counters.long_gaps, handler.counters.lost_samples, handler.counters.short_gaps) == (1, 6, 0)


def test_duplicates_are_dropped(raw):
    seq, t_us = stream(200)
    order = list(range(200))
    order.insert(50, 49)  # the same frame twice in a row
    order.insert(120, 100)  # a late repeat of an older frame
    order = np.array(order)
    handler = GapHandler()
    segments = feed(handler, seq[order], t_us[order], raw[order], chunk=16)
    assert len(segments) == 1
    np.testing.assert_array_equal(segments[0].raw, raw[:200])
    assert handler.counters.duplicates == 2 and handler.counters.lost_samples == 0


def test_invalid_values_count_as_missing(raw):
    bad = raw.copy()
    bad[500, 0] = np.nan  # one NaN: interpolated
    bad[800, 4] = np.inf
    bad[801, 2] = -16.5  # beyond the MPU-6050's +-16 g
    bad[1500:1510, 3] = 40.0  # ten samples over 35 rad/s: too long to bridge, reset
    assert invalid_rows(bad, GapConfig()).sum() == 1 + 2 + 10
    seq, t_us = stream(len(bad))
    handler = GapHandler()
    segments = feed(handler, seq, t_us, bad, chunk=100)
    assert [(s.start, s.reset) for s in segments] == [(0, True), (1510, True)]
    assert len(segments[0].raw) == 1500 and np.isfinite(segments[0].raw).all()
    np.testing.assert_allclose(segments[0].raw[500], (raw[499] + raw[501]) / 2)
    np.testing.assert_allclose(segments[0].raw[801], raw[799] + (raw[802] - raw[799]) * 2 / 3)
    c = handler.counters
    assert (c.invalid_samples, c.short_gaps, c.interpolated_samples, c.long_gaps, c.lost_samples) == (13, 2, 3, 1, 0)


def test_device_restart_starts_a_new_segment_after_the_last_position(raw):
    seq_a, t_a = stream(700, first_seq=30000)
    seq_b, t_b = stream(300)  # rebooted: seq and clock from 0
    handler = GapHandler()
    segments = merge_segments(handler.push(seq_a, t_a, raw[:700]) + handler.push(seq_b, t_b, raw[700:1000]))
    assert [(s.start, len(s.raw), s.reset) for s in segments] == [(0, 700, True), (700, 300, True)]
    assert handler.counters.device_restarts == 1


def test_restart_after_reconnect_skips_the_outage(raw):
    seq, t_us = stream(1000)
    handler = GapHandler()
    first = handler.push(seq[:400], t_us[:400], raw[:400])
    handler.restart(skipped=250)
    second = handler.push(seq[650:], t_us[650:], raw[650:1000])
    # The device kept sampling (seq and clock moved on together): positions follow its seq.
    assert [(s.start, s.reset) for s in first + second] == [(0, True), (650, True)]
    c = handler.counters
    assert (c.restarts, c.lost_samples, c.outage_samples) == (1, 0, 250)


def test_restart_after_a_device_reboot_uses_the_host_outage(raw):
    seq, t_us = stream(1000)
    handler = GapHandler()
    first = handler.push(seq[:400], t_us[:400], raw[:400])
    handler.restart(skipped=100)
    # The board rebooted on reconnect: seq and clock start again from 0.
    second = handler.push(seq[:300], t_us[:300], raw[400:700])
    assert [(s.start, s.reset) for s in first + second] == [(0, True), (500, True)]
    assert handler.counters.outage_samples == 0 and handler.counters.device_restarts == 0


@pytest.mark.parametrize("rate_hz, warns", [(50.0, False), (50.6, False), (49.4, False), (51.2, True), (48.7, True)])
def test_rate_estimate_from_device_timestamps(raw, rate_hz, warns):
    # Start the device clock near the u32 wrap so the estimate must unwrap it.
    seq, t_us = stream(len(raw), rate_hz=rate_hz, first_t=T_US_MODULO - 5_000_000)
    handler = GapHandler()
    messages = []
    for i in range(0, len(raw), 50):
        handler.push(seq[i:i + 50], t_us[i:i + 50], raw[i:i + 50])
        if (m := handler.rate.check()) is not None:
            messages.append(m)
    assert handler.rate.rate_hz == pytest.approx(rate_hz, rel=1e-3)
    assert bool(messages) == warns and handler.rate.warnings == int(warns)
    if warns:
        assert f"{rate_hz:.2f} Hz" in messages[0] and "off the 50 Hz" in messages[0]


def test_rate_is_not_judged_before_ten_seconds(raw):
    seq, t_us = stream(400, rate_hz=60.0)  # 8 s at a wildly wrong rate
    handler = GapHandler()
    handler.push(seq, t_us, raw[:400])
    assert handler.rate.rate_hz is None and handler.rate.check() is None


@pytest.mark.parametrize("reboot_at", [100, 40_000])  # within 256 samples of boot; past seq 32768
def test_a_reboot_with_the_port_kept_open_is_one_restart_at_any_seq(raw, reboot_at):
    """An Uno's main chip resets while its USB chip keeps the port: a boot HELLO, then seq and clock from 0."""
    seq_a, t_a = stream(reboot_at)
    seq_b, t_b = stream(600)
    values = np.resize(raw, (reboot_at + 600, 6))  # real samples, repeated to the length needed
    handler = GapHandler()
    segments = handler.push(seq_a, t_a, values[:reboot_at])
    handler.note_hello()
    segments = merge_segments(segments + handler.push(seq_b, t_b, values[reboot_at:]))
    assert [(s.start, len(s.raw), s.reset) for s in segments] == [(0, reboot_at, True), (reboot_at, 600, True)]
    c = handler.counters
    assert (c.device_restarts, c.lost_samples, c.duplicates, c.samples) == (1, 0, 0, reboot_at + 600)


def test_a_reboot_past_seq_32768_is_seen_from_the_clock_without_a_hello(raw):
    seq_a, t_a = stream(1000, first_seq=40_000, first_t=800_000_000)
    seq_b, t_b = stream(500)  # the HELLO was lost: seq 0 is "forward" from 40999, but the clock went back
    handler = GapHandler()
    segments = merge_segments(handler.push(seq_a, t_a, raw[:1000]) + handler.push(seq_b, t_b, raw[1000:1500]))
    assert [(s.start, s.reset) for s in segments] == [(0, True), (1000, True)]
    assert (handler.counters.device_restarts, handler.counters.lost_samples) == (1, 0)


def test_a_periodic_hello_is_not_a_reboot(raw):
    seq, t_us = stream(600)
    handler = GapHandler()
    segments = handler.push(seq[:250], t_us[:250], raw[:250])
    handler.note_hello()  # the HELLO every 5 s; the next sample continues (here after one lost sample)
    segments = merge_segments(segments + handler.push(seq[251:], t_us[251:], raw[251:600]))
    assert [(s.start, s.reset) for s in segments] == [(0, True)]
    assert (handler.counters.device_restarts, handler.counters.lost_samples, handler.counters.short_gaps) == (0, 1, 1)


def test_out_of_order_samples_count_once_not_as_lost_and_duplicate(raw):
    seq, t_us = stream(300)
    order = list(range(300))
    order[100], order[101] = 101, 100  # 101 overtakes 100
    order[200:203] = [202, 200, 201]  # 202 overtakes two
    order = np.array(order)
    handler = GapHandler()
    feed(handler, seq[order], t_us[order], raw[order], chunk=1)
    c = handler.counters
    assert (c.out_of_order, c.lost_samples, c.duplicates) == (3, 0, 0)
    # A true repeat is still a duplicate.
    handler.push(seq[299:300], t_us[299:300], raw[299:300])
    assert (handler.counters.duplicates, handler.counters.out_of_order) == (1, 3)


def test_a_reboot_whose_clock_lands_forward_of_the_last_is_still_a_restart(raw):
    """The soak's second reboot: the last boot's clock was near the u32 wrap and seq at 58,207, so seq 0 and
    t_us 0 look forward in both (7,329 samples, 64.8 s), but 7,329 samples take 146.6 s: not a gap."""
    seq_a, t_a = stream(1000, first_seq=57_208, first_t=4_230_196_224 - 999 * 20_000)
    seq_b, t_b = stream(500)
    handler = GapHandler()
    segments = handler.push(seq_a, t_a, raw[:1000])
    handler.note_hello()
    segments = merge_segments(segments + handler.push(seq_b, t_b, raw[1000:1500]))
    assert [(s.start, s.reset) for s in segments] == [(0, True), (1000, True)]
    assert (handler.counters.device_restarts, handler.counters.lost_samples) == (1, 0)


@pytest.mark.parametrize("rate_hz", [25.0, 100.0])
def test_a_gap_of_an_off_rate_device_is_a_gap(raw, rate_hz):
    seq, t_us = stream(1000, rate_hz=rate_hz)
    keep = np.r_[0:400, 430:1000]  # 30 samples lost
    handler = GapHandler()
    feed(handler, seq[keep], t_us[keep], raw[keep], chunk=1)
    assert (handler.counters.lost_samples, handler.counters.long_gaps, handler.counters.device_restarts) == (30, 1, 0)
