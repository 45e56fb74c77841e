"""Recordings of raw IMU samples: read three formats, write one (spec: PROTOCOL.md, "Recordings").

- ``.csv``: the project's recording CSV, header ``seq,t_us,ax,ay,az,gx,gy,gz`` and an optional
  ``label`` column (a class name or empty).
- ``.bin``: a raw capture of the serial bytes, decoded with ``FrameDecoder``.
- ``acc_expNN_userMM.txt``: a HAPT raw experiment; ``gyro_expNN_userMM.txt`` beside it is read
  too, and ``labels.txt`` beside it (when present) gives per-sample labels.

NaN values are kept (the edge runtime treats a NaN sample as missing) and counted in
``Recording.nan_samples``; infinities, text and wrong column counts are errors. Every
error is a ``RecordingError`` naming the file and line and saying what to do.
Standard library only.
"""
from __future__ import annotations

import csv
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from firmware_bridge.protocol import (
    DEFAULT_RATE_HZ,
    SEQ_MODULO,
    T_US_MODULO,
    FrameDecoder,
    Hello,
    Sample,
)

CLASSES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING")
CSV_COLUMNS = ("seq", "t_us", "ax", "ay", "az", "gx", "gy", "gz")
CSV_LABEL_COLUMN = "label"
HAPT_RATE_HZ = 50.0
HAPT_NAME = re.compile(r"^acc_exp(\d+)_user(\d+)\.txt$")


class RecordingError(ValueError):
    """A recording file cannot be read; the message names the file, the line and what to do."""


@dataclass
class Recording:
    samples: list[Sample]
    labels: list[str | None] | None
    rate_hz: float
    path: Path | None
    nan_samples: int = 0  # samples holding a NaN value (kept: they are missing data, not errors)
    counters: dict = field(default_factory=dict)  # FrameDecoder counters for a .bin capture

    def __len__(self) -> int:
        return len(self.samples)


def _where(path: Path, line: int | None) -> str:
    return f"{path}, line {line}" if line is not None else f"{path}"


def _number(text: str, path: Path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecordingError(f"{_where(path, line)}: column {column} is {text.strip()!r}, not a number; "
                             "fix or delete that row (write NaN for a missing value)") from None
    if math.isinf(value):
        raise RecordingError(f"{_where(path, line)}: column {column} is infinite; fix or delete that row "
                             "(write NaN for a missing value)")
    return value


def _integer(text: str, path: Path, line: int, column: str, modulo: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise RecordingError(f"{_where(path, line)}: column {column} is {text.strip()!r}, not an integer; "
                             "fix or delete that row") from None
    if not 0 <= value < modulo:
        raise RecordingError(f"{_where(path, line)}: column {column} is {value}, outside 0..{modulo - 1}; "
                             f"it is the wire value and wraps (take it modulo {modulo})")
    return value


def _estimate_rate(samples: list[Sample], fallback: float) -> float:
    """The rate from the median device-time step between consecutive seq (wrap-aware)."""
    steps = []
    for a, b in zip(samples, samples[1:]):
        if (b.seq - a.seq) % SEQ_MODULO == 1:
            dt = (b.t_us - a.t_us) % T_US_MODULO
            if 0 < dt < 10_000_000:
                steps.append(dt)
    if not steps:
        return fallback
    return 1e6 / statistics.median(steps)


def _has_nan(sample: Sample) -> bool:
    return any(math.isnan(v) for v in sample.values())


def read_recording(path: str | Path) -> Recording:
    """Reads a recording CSV, a raw serial capture (.bin) or a HAPT acc_expNN_userMM.txt."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{path}: no such file; give a .csv recording, a .bin capture or a HAPT acc_expNN_userMM.txt")
    if path.is_dir():
        raise RecordingError(f"{path} is a directory; give one recording file (.csv, .bin or HAPT acc_expNN_userMM.txt)")
    if HAPT_NAME.match(path.name):
        return _read_hapt(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix == ".bin":
        return _read_bin(path)
    raise RecordingError(f"{path}: unknown recording format {suffix!r}; use a .csv recording (header "
                         f"{','.join(CSV_COLUMNS)}[,label]), a .bin serial capture or a HAPT acc_expNN_userMM.txt")


def _read_csv(path: Path) -> Recording:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise RecordingError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); is it a binary capture? name it .bin") from None
    rows = list(csv.reader(text.splitlines()))
    if not rows or not any(rows):
        raise RecordingError(f"{path}: file is empty; a recording CSV starts with the header {','.join(CSV_COLUMNS)}[,label]")
    header = [h.strip() for h in rows[0]]
    with_label = header == [*CSV_COLUMNS, CSV_LABEL_COLUMN]
    if header != list(CSV_COLUMNS) and not with_label:
        raise RecordingError(f"{path}, line 1: header is {','.join(header)!r}; expected {','.join(CSV_COLUMNS)} "
                             f"(optionally followed by ,{CSV_LABEL_COLUMN})")
    n_columns = len(header)
    samples: list[Sample] = []
    labels: list[str | None] = []
    nan_samples = 0
    for line_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue  # blank line
        if len(row) != n_columns:
            raise RecordingError(f"{path}, line {line_no}: {len(row)} columns, the header has {n_columns}; "
                                 "the file may be truncated or hand-edited: fix or delete that row")
        seq = _integer(row[0], path, line_no, "seq", SEQ_MODULO)
        t_us = _integer(row[1], path, line_no, "t_us", T_US_MODULO)
        values = [_number(v, path, line_no, name) for v, name in zip(row[2:8], CSV_COLUMNS[2:])]
        sample = Sample(seq, t_us, *values)
        nan_samples += _has_nan(sample)
        samples.append(sample)
        if with_label:
            label = row[8].strip()
            if label and label not in CLASSES:
                raise RecordingError(f"{path}, line {line_no}: label {label!r} is not a class; use one of "
                                     f"{', '.join(CLASSES)} or leave it empty")
            labels.append(label or None)
    if not samples:
        raise RecordingError(f"{path}: header only, no samples; record something or pick another file")
    return Recording(samples, labels if with_label else None, _estimate_rate(samples, float(DEFAULT_RATE_HZ)), path, nan_samples)


def _read_bin(path: Path) -> Recording:
    data = path.read_bytes()
    if not data:
        raise RecordingError(f"{path}: file is empty; capture the serial port for a while (har-bridge decode --port P --out FILE.bin)")
    decoder = FrameDecoder()
    frames = decoder.feed(data)
    samples = [f for f in frames if isinstance(f, Sample)]
    hellos = [f for f in frames if isinstance(f, Hello)]
    if not samples:
        raise RecordingError(
            f"{path}: no valid SAMPLE frames in {len(data)} bytes (decoder counters {decoder.counters.as_dict()}); "
            "is it a capture of the framed protocol at the right baud rate? A text-mode capture is not a .bin recording")
    rate = float(hellos[0].rate_hz) if hellos and hellos[0].rate_hz > 0 else _estimate_rate(samples, float(DEFAULT_RATE_HZ))
    counters = decoder.counters.as_dict()
    counters["pending_bytes"] = decoder.pending_bytes  # a frame cut off by the end of the capture
    return Recording(samples, None, rate, path, sum(map(_has_nan, samples)), counters)


def _read_columns(path: Path, what: str) -> list[tuple[float, float, float]]:
    if not path.exists():
        raise RecordingError(f"{path}: missing; a HAPT experiment needs its {what} file beside the acc_ file "
                             "(extract both from RawData/)")
    rows = []
    with path.open(encoding="ascii", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise RecordingError(f"{path}, line {line_no}: {len(parts)} columns, a HAPT {what} file has 3 "
                                     "(x y z); the file may be truncated or damaged: extract it again")
            rows.append(tuple(_number(p, path, line_no, axis) for p, axis in zip(parts, "xyz")))
    if not rows:
        raise RecordingError(f"{path}: file is empty; extract it again from the HAPT RawData folder")
    return rows


def read_hapt_labels(labels_path: Path, experiment: int, user: int, n_samples: int) -> list[str | None]:
    """Per-sample labels of one experiment from HAPT's labels.txt (activities 7-12 and gaps: None)."""
    labels: list[str | None] = [None] * n_samples
    with labels_path.open(encoding="ascii", errors="replace") as handle:
        for line_no, line in enumerate(handle, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise RecordingError(f"{labels_path}, line {line_no}: {len(parts)} columns; labels.txt rows are "
                                     "'experiment user activity first last': extract it again")
            try:
                exp, usr, activity, first, last = (int(p) for p in parts)
            except ValueError:
                raise RecordingError(f"{labels_path}, line {line_no}: {line.strip()!r} is not five integers; "
                                     "extract labels.txt again") from None
            if exp != experiment or usr != user:
                continue
            if not 1 <= first <= last <= n_samples:
                raise RecordingError(f"{labels_path}, line {line_no}: samples {first}..{last} are outside experiment "
                                     f"{experiment} (user {user}), which has {n_samples} samples (1-based); "
                                     "the acc/gyro files and labels.txt do not belong together")
            if 1 <= activity <= len(CLASSES):
                labels[first - 1:last] = [CLASSES[activity - 1]] * (last - first + 1)
    return labels


def _read_hapt(acc_path: Path) -> Recording:
    match = HAPT_NAME.match(acc_path.name)
    experiment, user = int(match.group(1)), int(match.group(2))
    gyro_path = acc_path.with_name("gyro_" + acc_path.name[len("acc_"):])
    acc = _read_columns(acc_path, "accelerometer")
    gyro = _read_columns(gyro_path, "gyroscope")
    if len(acc) != len(gyro):
        raise RecordingError(f"{acc_path}: {len(acc)} rows but {gyro_path.name} has {len(gyro)}; one of them is "
                             "truncated: extract both again")
    tick_us = round(1e6 / HAPT_RATE_HZ)
    samples = [Sample(i % SEQ_MODULO, (i * tick_us) % T_US_MODULO, *a, *g) for i, (a, g) in enumerate(zip(acc, gyro))]
    labels_path = acc_path.with_name("labels.txt")
    labels = read_hapt_labels(labels_path, experiment, user, len(samples)) if labels_path.exists() else None
    return Recording(samples, labels, HAPT_RATE_HZ, acc_path, sum(map(_has_nan, samples)))


def _format_value(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def write_recording_csv(path: str | Path, samples: list[Sample], labels: list[str | None] | None = None) -> None:
    """Writes the project's recording CSV (values with full precision, labels optional)."""
    path = Path(path)
    if labels is not None and len(labels) != len(samples):
        raise RecordingError(f"{path}: {len(labels)} labels for {len(samples)} samples; give one label (or None) per sample")
    if labels is not None:
        for i, label in enumerate(labels):
            if label is not None and label not in CLASSES:
                raise RecordingError(f"{path}: label {label!r} of sample {i} is not a class; use one of {', '.join(CLASSES)} or None")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*CSV_COLUMNS, CSV_LABEL_COLUMN] if labels is not None else CSV_COLUMNS)
        for i, s in enumerate(samples):
            row = [s.seq % SEQ_MODULO, s.t_us % T_US_MODULO, *(_format_value(v) for v in s.values())]
            if labels is not None:
                row.append(labels[i] or "")
            writer.writerow(row)
