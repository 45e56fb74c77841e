"""Recordings of raw IMU samples: read three formats, write one (spec: PROTOCOL.md, "Recordings").

- ``.csv``: the project's recording CSV, header ``seq,t_us,ax,ay,az,gx,gy,gz`` and an optional
  ``label`` column (a class name of the user's choosing, or empty = unlabelled).
- ``.bin``: a raw capture of the serial bytes, decoded with ``FrameDecoder``.
- ``acc_expNN_userMM.txt``: a HAPT raw experiment; ``gyro_expNN_userMM.txt`` beside it is read
  too, and ``labels.txt`` beside it (when present) gives per-sample labels.

``HaptSource`` is the one reader of the HAPT raw data set (zip or folder: experiments, labels.txt),
used by replay here and by training (training/datasets.py); ``data_root()`` is where the shared data
lives.

NaN values are kept (the edge runtime treats a NaN sample as missing) and counted in
``Recording.nan_samples``; infinities, text and wrong column counts are errors. Every
error is a ``RecordingError`` naming the file and line and saying what to do.
Standard library only.
"""
from __future__ import annotations

import csv
import math
import os
import re
import statistics
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_bridge.protocol import (
    DEFAULT_RATE_HZ,
    SEQ_MODULO,
    T_US_MODULO,
    FrameDecoder,
    Hello,
    Sample,
)

# HAPT's activity_labels.txt, index = activity id - 1: the six UCI-HAR classes, then the postural transitions.
HAPT_ACTIVITIES = ("WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING",
                   "STAND_TO_SIT", "SIT_TO_STAND", "SIT_TO_LIE", "LIE_TO_SIT", "STAND_TO_LIE", "LIE_TO_STAND")
HAPT_ARCHIVE = "HAPT_RawData_train_users.zip"
# A class name in a recording's label column: what a user may call an activity (no spaces, no commas).
LABEL_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
CSV_COLUMNS = ("seq", "t_us", "ax", "ay", "az", "gx", "gy", "gz")
CSV_LABEL_COLUMN = "label"
HAPT_RATE_HZ = 50.0
HAPT_NAME = re.compile(r"^acc_exp(\d+)_user(\d+)\.txt$")


class RecordingError(ValueError):
    """A recording file cannot be read; the message names the file, the line and what to do."""


def data_root() -> Path:
    """The shared data folder: $HAR_SHARED_DATA when set (read at each call), else ../shared/data beside
    the repository. Every tool, script and test finds the data through this one function."""
    override = os.environ.get("HAR_SHARED_DATA")
    return Path(override) if override else Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def check_label(label: str, where: str) -> str:
    """A label as written in a recording (stripped), or RecordingError when it cannot be a class name."""
    if not LABEL_NAME.match(label):
        if not label:
            raise RecordingError(f"{where}: the label is empty; give a class name (letters, digits and _ . - only, "
                                 "e.g. WALKING, RUNNING, bike-ride)")
        raise RecordingError(f"{where}: label {label!r} is not a class name; use letters, digits and _ . - "
                             "only (e.g. WALKING, RUNNING, bike-ride), or leave it empty for unlabelled samples")
    return label


@dataclass
class Recording:
    samples: list[Sample]
    labels: list[str | None] | None
    rate_hz: float
    path: Path | None
    nan_samples: int = 0  # samples holding a NaN value (kept: they are missing data, not errors)
    counters: dict[str, Any] = field(default_factory=dict)  # FrameDecoder counters for a .bin capture

    def __len__(self) -> int:
        return len(self.samples)


def _where(path: str | Path, line: int | None) -> str:
    return f"{path}, line {line}" if line is not None else f"{path}"


def _number(text: str, path: str | Path, line: int, column: str,
            hint: str = "write NaN for a missing value") -> float:
    try:
        value = float(text)
    except ValueError:
        raise RecordingError(f"{_where(path, line)}: column {column} is {text.strip()!r}, not a number; "
                             f"fix or delete that row ({hint})") from None
    if math.isinf(value):
        raise RecordingError(f"{_where(path, line)}: column {column} is infinite; fix or delete that row ({hint})")
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
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark (Excel writes one) is not the header
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
            labels.append(check_label(label, f"{path}, line {line_no}") if label else None)
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


# -- the HAPT raw data set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HaptSegment:
    """One row of labels.txt: samples first..last (1-based, inclusive) of an experiment are `activity`."""

    experiment: int
    user: int
    activity: int  # 1..12, HAPT_ACTIVITIES[activity - 1]
    first: int
    last: int
    line: int      # line of labels.txt, for messages

    @property
    def name(self) -> str:
        return HAPT_ACTIVITIES[self.activity - 1]


class HaptSource:
    """The HAPT raw data (``RawData/acc_expNN_userMM.txt``, ``gyro_...``, ``labels.txt``), given as the zip
    file, the extracted folder (anywhere above RawData/) or the RawData folder itself. labels.txt is
    optional for replay and required by ``segments()``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"{self.path}: no such file or folder; give the HAPT raw data zip "
                                 f"({HAPT_ARCHIVE}) or its extracted folder")
        self._zip: zipfile.ZipFile | None = None
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise RecordingError(f"{self.path}: not a readable zip file (truncated download?); "
                                     "download it again or give the extracted folder") from None
            names = self._zip.namelist()
        else:
            names = [str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()]
        # Member names by file name; inside a zip or tree only RawData/ counts (the data set's own layout).
        self.files = {Path(n).name: n for n in names
                      if "RawData" in Path(n).parts or Path(n).parent == Path(".")}

    def has(self, name: str) -> bool:
        return name in self.files

    def where(self, name: str) -> str:
        return f"{self.path}/{self.files[name]}" if self._zip is None else f"{self.path}:{self.files[name]}"

    def read_text(self, name: str, what: str) -> str:
        if name not in self.files:
            where = f"{self.path}/{name}" if self._zip is None else f"{self.path}:{name}"
            raise RecordingError(f"{where}: missing; a HAPT experiment needs its {what} beside the acc_ file "
                                 "(extract acc_, gyro_ and labels.txt from RawData/ together)")
        member = self.files[name]
        raw = self._zip.read(member) if self._zip is not None else (self.path / member).read_bytes()
        return raw.decode("ascii", errors="replace")

    def experiments(self) -> list[tuple[int, int]]:
        """(experiment, user) of every acc_ file, sorted."""
        found = [HAPT_NAME.match(n) for n in self.files]
        return sorted((int(m.group(1)), int(m.group(2))) for m in found if m)

    def segments(self) -> list[HaptSegment]:
        """Every labels.txt row, checked: five integers, activity 1..12, first <= last."""
        if "labels.txt" not in self.files:
            raise RecordingError(f"{self.path}: no RawData/labels.txt inside; is this the HAPT raw data set?")
        where = self.where("labels.txt")
        rows = []
        for line_no, line in enumerate(self.read_text("labels.txt", "label file").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 5:
                raise RecordingError(f"{where}, line {line_no}: {len(parts)} columns; labels.txt rows are "
                                     "'experiment user activity first last': extract it again")
            try:
                experiment, user, activity, first, last = (int(p) for p in parts)
            except ValueError:
                raise RecordingError(f"{where}, line {line_no}: {line.strip()!r} is not five integers; "
                                     "extract labels.txt again") from None
            if not 1 <= activity <= len(HAPT_ACTIVITIES) or not 1 <= first <= last:
                raise RecordingError(f"{where}, line {line_no}: activity {activity} (1..{len(HAPT_ACTIVITIES)}) "
                                     f"or samples {first}..{last} out of range; extract labels.txt again")
            rows.append(HaptSegment(experiment, user, activity, first, last, line_no))
        return rows

    def read_columns(self, name: str, what: str) -> list[tuple[float, float, float]]:
        """An acc_ or gyro_ file: three numbers per line -> rows; errors name the file and line."""
        where = self.where(name) if name in self.files else name
        rows = []
        for line_no, line in enumerate(self.read_text(name, what).splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 3:
                raise RecordingError(f"{where}, line {line_no}: {len(parts)} columns, a HAPT {what} has 3 "
                                     "(x y z); the file may be truncated or damaged: extract it again")
            rows.append((_number(parts[0], where, line_no, "x"), _number(parts[1], where, line_no, "y"),
                         _number(parts[2], where, line_no, "z")))
        if not rows:
            raise RecordingError(f"{where}: file is empty; extract it again from the HAPT RawData folder")
        return rows

    def read_experiment(self, experiment: int, user: int) -> list[tuple[float, ...]]:
        """One experiment's raw samples: rows of (ax, ay, az) in g with gravity, then (gx, gy, gz) in rad/s."""
        acc_name = f"acc_exp{experiment:02d}_user{user:02d}.txt"
        gyro_name = f"gyro_exp{experiment:02d}_user{user:02d}.txt"
        acc = self.read_columns(acc_name, "accelerometer file")
        gyro = self.read_columns(gyro_name, "gyroscope file")
        if len(acc) != len(gyro):
            raise RecordingError(f"{self.where(acc_name)}: {len(acc)} rows but {gyro_name} has {len(gyro)}; one "
                                 "of them is truncated: extract both again")
        return [a + g for a, g in zip(acc, gyro)]


def hapt_sample_activities(segments: list[HaptSegment], experiment: int, user: int, n_samples: int,
                           where: str = "labels.txt") -> list[int]:
    """Per-sample HAPT activity ids (1-12) of one experiment, 0 where labels.txt labels nothing."""
    activities = [0] * n_samples
    for seg in segments:
        if seg.experiment != experiment or seg.user != user:
            continue
        if seg.last > n_samples:
            raise RecordingError(f"{where}, line {seg.line}: samples {seg.first}..{seg.last} are outside experiment "
                                 f"{experiment} (user {user}), which has {n_samples} samples (1-based); "
                                 "the acc/gyro files and labels.txt do not belong together")
        activities[seg.first - 1:seg.last] = [seg.activity] * (seg.last - seg.first + 1)
    return activities


def hapt_sample_labels(segments: list[HaptSegment], experiment: int, user: int, n_samples: int,
                       where: str = "labels.txt", keep: tuple[str, ...] = HAPT_ACTIVITIES[:6]) -> list[str | None]:
    """Per-sample labels of one experiment: the names of activities in `keep` (default the six UCI-HAR
    classes, so the postural transitions count as unlabelled); None elsewhere."""
    names = [None, *HAPT_ACTIVITIES]
    return [name if name in keep else None
            for name in (names[a] for a in hapt_sample_activities(segments, experiment, user, n_samples, where))]


def _read_hapt(acc_path: Path) -> Recording:
    match = HAPT_NAME.match(acc_path.name)
    assert match is not None, acc_path  # only HAPT_NAME-matching paths get here
    experiment, user = int(match.group(1)), int(match.group(2))
    source = HaptSource(acc_path.parent)
    rows = source.read_experiment(experiment, user)
    tick_us = round(1e6 / HAPT_RATE_HZ)
    samples = [Sample(i % SEQ_MODULO, (i * tick_us) % T_US_MODULO, *r) for i, r in enumerate(rows)]
    labels = (hapt_sample_labels(source.segments(), experiment, user, len(samples), source.where("labels.txt"))
              if source.has("labels.txt") else None)
    return Recording(samples, labels, HAPT_RATE_HZ, acc_path, sum(map(_has_nan, samples)))


def _format_value(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(float(value))


def _csv_row(seq: int, t_us: int, values: Sequence[float]) -> str:
    """One recording CSV row without its label column and line end: seq,t_us,ax,ay,az,gx,gy,gz."""
    return f"{seq % SEQ_MODULO},{t_us % T_US_MODULO}," + ",".join(map(_format_value, values))


def write_recording_csv(path: str | Path, samples: list[Sample], labels: list[str | None] | None = None) -> None:
    """Writes the project's recording CSV (values with full precision, labels optional)."""
    path = Path(path)
    if labels is not None and len(labels) != len(samples):
        raise RecordingError(f"{path}: {len(labels)} labels for {len(samples)} samples; give one label (or None) per sample")
    if labels is not None:
        for i, label in enumerate(labels):
            if label is not None:
                check_label(label, f"{path}, sample {i}")
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        handle.write(",".join([*CSV_COLUMNS, CSV_LABEL_COLUMN] if labels is not None else CSV_COLUMNS) + "\n")
        for i, s in enumerate(samples):
            label = "" if labels is None else f",{labels[i] or ''}"  # labels are class names: no comma, no quote
            handle.write(_csv_row(s.seq, s.t_us, s.values()) + label + "\n")
    tmp.replace(path)  # a reader never sees half a recording



class RecordingWriter:
    """A recording written as it arrives: `.csv` (the decoded samples, the project's recording CSV, every row
    labelled `label` when given) or `.bin` (the raw serial bytes). `har-edge record` (edge/sinks.py's
    RecordingSink) and `har-bridge decode --out` write through it.

    Streams to disk: what arrived is written and fsync'ed at least every `sync_every_s` (1 s), so a crash or
    a power cut loses at most the last second, and memory holds at most that second. Each write is of whole
    CSV rows, so a killed process leaves a file that replays. It writes the path itself, not a temp file
    renamed at the end, because a live recording is read while it grows and must survive a kill. A file
    already there is replaced only when the first data comes (`replaced`): a port that never opens, or a
    command that fails before a sample arrives, leaves it as it was."""

    def __init__(self, path: str | Path, sync_every_s: float = 1.0, label: str | None = None):
        self.path = Path(path)
        self._row_end = "\n" if label is None else f",{label}\n"  # checked by the caller (check_label)
        self.raw = self.path.suffix.lower() == ".bin"
        self.sync_every_s = sync_every_s
        self.samples = 0
        self.bytes = 0
        self.syncs = 0
        self._pending: list[bytes] = []
        self._last_sync = time.monotonic()
        header = ",".join(CSV_COLUMNS) + ("" if label is None else f",{CSV_LABEL_COLUMN}")
        self._header = b"" if self.raw else (header + "\n").encode("ascii")
        existed = self.path.exists()
        try:  # not truncated here: an existing file is kept until there is something to replace it with
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o644)
        except OSError as exc:
            raise RecordingError(f"cannot write {self.path}: {exc.strerror}; choose a writable path for --out") from None
        self.replaced = False  # whether this writer has started the file (an existing one is then gone)
        if not existed:
            self._start()  # a new file: its header now, so that it replays (empty) from the start

    def _start(self) -> None:
        try:
            os.ftruncate(self._fd, 0)
        except OSError as exc:
            raise self._failed(exc) from None
        self.replaced = True
        self._write(self._header)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as exc:
            raise self._failed(exc) from None
        self.bytes += len(data)

    def _failed(self, exc: OSError) -> RecordingError:
        return RecordingError(f"cannot write {self.path}: {exc.strerror}; free some space or choose another --out")

    def write_bytes(self, data: bytes) -> None:
        """Bytes as they came from the port (kept by a .bin recording only)."""
        if self.raw and data:
            self._pending.append(bytes(data))
            self._maybe_sync()

    def write_rows(self, seq: Sequence[int], t_us: Sequence[int], values: Sequence[Sequence[float]]) -> None:
        """Decoded samples as columns: seq (n,), t_us (n,), values (n, 6) (kept by a .csv recording only)."""
        if self.raw or len(seq) == 0:
            return
        rows = [_csv_row(s, t, v) + self._row_end for s, t, v in zip(seq, t_us, values)]
        self._pending.append("".join(rows).encode("utf-8"))
        self.samples += len(rows)
        self._maybe_sync()

    def write_samples(self, samples: Sequence[Sample]) -> None:
        """Decoded Sample frames (kept by a .csv recording only)."""
        self.write_rows([s.seq for s in samples], [s.t_us for s in samples], [s.values() for s in samples])

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._last_sync >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        """Write what is pending (whole rows, one write) and fsync it."""
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()  # written or reported: a failed write is not retried at every tick
            if not self.replaced:
                self._start()
            self._write(data)
        try:
            os.fsync(self._fd)
        except OSError as exc:
            raise self._failed(exc) from None
        self.syncs += 1
        self._last_sync = time.monotonic()

    def tick(self) -> None:
        """Called while the port is quiet too: pending rows reach the disk within the second."""
        self._maybe_sync()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1


SEGMENT_COLUMNS = ("start", "end", "label")
SEGMENT_UNITS = ("samples", "seconds")


def read_segments(path: str | Path, n_samples: int, rate_hz: float, unit: str = "samples") -> list[str | None]:
    """A segments CSV (header ``start,end,label``; one labelled span per row, ``start`` inclusive, ``end``
    exclusive, in samples from 0 or in seconds from the first sample) -> one label (or None) per sample.
    Spans may not overlap or reach past the recording; samples of no span are unlabelled."""
    path = Path(path)
    if unit not in SEGMENT_UNITS:
        raise RecordingError(f"unit {unit!r}: segments are in {' or '.join(SEGMENT_UNITS)}")
    if not path.is_file():
        raise RecordingError(f"{path}: no such segments file; write a CSV with the header {','.join(SEGMENT_COLUMNS)}")
    rows = list(csv.reader(path.read_text(encoding="utf-8-sig", errors="replace").splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    if header != list(SEGMENT_COLUMNS):
        raise RecordingError(f"{path}, line 1: header is {','.join(header)!r}; a segments file starts with "
                             f"{','.join(SEGMENT_COLUMNS)} (then one 'start,end,LABEL' row per span, in {unit})")
    labels: list[str | None] = [None] * n_samples
    owner = [0] * n_samples  # line of the span that labelled each sample, for overlap messages
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 3:
            raise RecordingError(f"{path}, line {line_no}: {len(row)} columns; write start,end,LABEL")
        hint = f"a span needs its start and end, in {unit}"
        start, end = (_number(v, path, line_no, name, hint) for v, name in zip(row[:2], SEGMENT_COLUMNS))
        if math.isnan(start) or math.isnan(end):
            raise RecordingError(f"{path}, line {line_no}: {row[0].strip()},{row[1].strip()}: not a number; "
                                 f"fix or delete that row ({hint})")
        if unit == "seconds":
            first, stop = round(start * rate_hz), round(end * rate_hz)
        elif start != int(start) or end != int(end):
            raise RecordingError(f"{path}, line {line_no}: {start:g},{end:g} are not whole sample numbers; "
                                 "give samples (from 0) or use --unit seconds")
        else:
            first, stop = int(start), int(end)
        label = check_label(row[2].strip(), f"{path}, line {line_no}")
        if not 0 <= first < stop <= n_samples:
            raise RecordingError(f"{path}, line {line_no}: span {row[0].strip()}..{row[1].strip()} {unit} is empty or "
                                 f"outside the recording of {n_samples} samples ({n_samples / rate_hz:.2f} s); "
                                 "start < end, end exclusive")
        clash = next((owner[i] for i in range(first, stop) if owner[i]), 0)
        if clash:
            raise RecordingError(f"{path}, line {line_no}: span overlaps the span of line {clash}; one label per sample")
        labels[first:stop] = [label] * (stop - first)
        owner[first:stop] = [line_no] * (stop - first)
    return labels
