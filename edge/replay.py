"""Replay of a recording CSV in blocks: the file is parsed in numpy blocks of `block` rows and fed to
the pipeline as it is read, so memory stays flat whatever the file's length (a 2-hour recording
would take ~400 B per sample as `Sample` objects).

The accepted format and every value are those of `firmware_bridge.recording.read_recording`
(PROTOCOL.md, "Recordings"): a block that the fast parser does not take as clean (a bad number, a
wrong column count, an integer column that is not one, a label that is not a class, an infinity)
is handed to that reader, which raises its own error naming the file and line. Other formats
(.bin captures, HAPT experiments) are read whole by it, as before.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, Final

import numpy as np

from firmware_bridge.protocol import DEFAULT_RATE_HZ, SEQ_MODULO, T_US_MODULO
from firmware_bridge.recording import CSV_COLUMNS, CSV_LABEL_COLUMN, LABEL_NAME, read_recording

from edge.frontend import CLASSES
from edge.gaps import samples_to_arrays
from edge.sources import SampleBlock


class _Refused(Enum):
    BLOCK = "refused"


_REFUSED: Final = _Refused.BLOCK  # a block the fast parser does not take as clean
_Block = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]  # seq, t_us, raw, label codes
NO_LABEL = 255  # label code of an unlabelled sample


class LabelTable:
    """Label name <-> uint8 code. Starts with the six classes and grows as recordings name others (a data
    set of one's own names its own classes); a name that cannot be a label is a ValueError."""

    def __init__(self, names: Iterable[str] = CLASSES) -> None:
        self.names: list[str] = []
        self._codes: dict[str, int] = {"": NO_LABEL}
        for name in names:
            self.code(name)

    def code(self, name: str) -> int:
        code = self._codes.get(name)
        if code is None:
            if not LABEL_NAME.match(name) or len(self.names) >= NO_LABEL:
                raise ValueError(f"label {name!r}")
            code = self._codes[name] = len(self.names)
            self.names.append(name)
        return code


LABELS = LabelTable()


class CodedLabels:
    """Per-sample true labels kept as uint8 codes while the replay runs (1 B per sample)."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._codes = np.zeros(0, dtype=np.uint8)

    def extend(self, codes: np.ndarray) -> None:
        self._parts.append(codes)

    @property
    def codes(self) -> np.ndarray:
        if self._parts:
            self._codes = np.concatenate([self._codes, *self._parts])
            self._parts = []
        return self._codes

    def __len__(self) -> int:
        return len(self._codes) + sum(map(len, self._parts))

    def labelled(self) -> int:
        """How many samples carry a label."""
        return int(np.count_nonzero(self.codes != NO_LABEL))

    def window_truth(self, ends: Sequence[int] | np.ndarray, size: int) -> list[str | None]:
        """Each window's true class: the label all its `size` samples share, else None (as
        edge.scoring.window_truth, from the codes with numpy, a thousand windows at a time: no
        per-sample list or array beyond the codes themselves)."""
        codes = self.codes
        spans = np.lib.stride_tricks.sliding_window_view(codes, size) if len(codes) >= size else None  # (n-size+1, size)
        truth: list[str | None] = []
        end_array = np.asarray(ends, dtype=np.int64)
        for i in range(0, len(end_array), 1024):
            chunk = end_array[i:i + 1024]
            inside = (chunk - size >= 0) & (chunk <= len(codes))
            if spans is None or not inside.any():
                truth += [None] * len(chunk)
                continue
            windows = spans[np.where(inside, chunk - size, 0)]  # (k, size) uint8 codes
            first = windows[:, 0]
            same = inside & (windows == first[:, None]).all(axis=1) & (first != NO_LABEL)
            truth += [LABELS.names[c] if ok else None for c, ok in zip(first.tolist(), same.tolist())]
        return truth

    def names(self) -> list[str | None]:
        """The labels as a list of class names / None (what truth_summary and plot_timeline index)."""
        names = (*LABELS.names, *([None] * (256 - len(LABELS.names))))
        return [names[c] for c in self.codes.tolist()]


class StreamedRecording:
    """A recording read block by block: iterate it for `SampleBlock`s (each stamped when parsed);
    `labels` fills as it is read (None for a file without labels), `samples` counts what was read."""

    def __init__(self, path: str | Path, block: int = 4096):
        self.path = Path(path)
        self.block = max(1, int(block))
        self.samples = 0
        self.rate_hz = float(DEFAULT_RATE_HZ)
        self.labels: CodedLabels | None = None
        self._whole = None
        if self.path.suffix.lower() != ".csv" or not self.path.is_file():
            self._whole = read_recording(self.path)  # other formats, and every error about the path
            self.rate_hz = self._whole.rate_hz
            return
        self._handle = self.path.open("rb")
        self._rest = b""  # the part of the last read after its last newline
        try:
            header = self._handle.readline().decode("utf-8-sig")  # as read_recording: a byte-order mark is no column
        except UnicodeDecodeError:
            self._handle.close()
            read_recording(self.path)  # raises its "not UTF-8" error
            raise
        self._with_label = [h.strip() for h in header.split(",")] == [*CSV_COLUMNS, CSV_LABEL_COLUMN]
        if not self._with_label and [h.strip() for h in header.split(",")] != list(CSV_COLUMNS):
            self._handle.close()
            read_recording(self.path)  # raises its header (or empty file) error
        self.labels = CodedLabels() if self._with_label else None
        self._first = self._read_block()  # the rate estimate, and a file without samples, need one block now
        if self._first is None:
            self._handle.close()
            read_recording(self.path)  # raises "header only"
        if self._first is _REFUSED:
            self._take_whole()
            return
        assert self._first is not None  # read_recording raised for a file without samples
        self.rate_hz = _estimate_rate(*self._first[:2])

    def _take_whole(self) -> None:
        """The fast parser refused a block: read_recording raises the file's error, or takes the file."""
        self._handle.close()
        self._whole = read_recording(self.path)
        if self.samples == 0:
            self.rate_hz = self._whole.rate_hz

    def __iter__(self) -> Iterator[SampleBlock]:
        if self._whole is None:
            parsed = self._first
            try:
                while parsed is not None and parsed is not _REFUSED:
                    seq, t_us, raw, codes = parsed
                    self.samples += len(seq)
                    if self.labels is not None and codes is not None:  # both exist for a labelled file
                        self.labels.extend(codes)
                    yield SampleBlock(seq, t_us, raw, time.perf_counter())
                    parsed = self._read_block()
            finally:
                self._handle.close()
            if parsed is None:
                return
            self._take_whole()
        done = self.samples  # rows already replayed from the fast parser
        assert self._whole is not None  # _take_whole read it
        samples = self._whole.samples
        if self._whole.labels is not None:
            if self.labels is None:
                self.labels = CodedLabels()
            self.labels.extend(np.array([LABELS.code(label or "") for label in self._whole.labels[done:]], np.uint8))
        for i in range(done, len(samples), self.block):
            seq, t_us, raw = samples_to_arrays(samples[i:i + self.block])
            self.samples += len(seq)
            yield SampleBlock(seq, t_us, raw, time.perf_counter())

    def close(self) -> None:
        if self._whole is None:
            self._handle.close()

    def _read_block(self) -> _Block | _Refused | None:
        """-> (seq (n,) int64, t_us (n,) int64, raw (n, 6) float64, label codes (n,) uint8 | None), None at the end."""
        data = self._handle.read(self.block * BYTES_PER_ROW)
        while data and b"\n" not in data:  # no row ends in this read: take more of it
            if len(self._rest) + len(data) > MAX_ROW_BYTES:
                return _REFUSED  # no recording row is this long: read_recording says what the file is
            self._rest += data
            data = self._handle.read(self.block * BYTES_PER_ROW)
        if data:
            data = self._rest + data
            cut = data.rfind(b"\n") + 1
            self._rest = data[cut:]
            data = data[:cut]
        else:  # the end: what is left, without the blank lines a file may end with
            data, self._rest = self._rest.rstrip(b"\r\n"), b""
            if not data:
                return None
            data += b"\n"
        return parse_rows(data, self._with_label)


BYTES_PER_ROW = 80  # read about `block` rows of a recording at a time (a row is 50-70 bytes)
MAX_ROW_BYTES = 1 << 20  # a "row" longer than this is not one (a binary file named .csv)
# One row's fields: loadtxt parses the integer columns as integers (so "1.0" is refused, as read_recording does),
# and with the dtype naming every column it refuses a row with another column count.
_ROW = np.dtype([("seq", np.int64), ("t_us", np.int64), ("raw", np.float64, (6,))])
LABEL_BYTES = 32  # the label column as loadtxt keeps it; a label this long or longer goes to read_recording
_LABELLED_ROW = np.dtype([*_ROW.descr, ("label", f"S{LABEL_BYTES}")])


def parse_rows(data: bytes, with_label: bool) -> _Block | _Refused:
    """Whole rows of a recording CSV (bytes ending with a newline) -> seq, t_us, raw, label codes;
    _REFUSED unless every row is clean as `read_recording` would take it (which then says what is not)."""
    if not data.isascii() or b"\0" in data:  # (numpy's bytes fields drop trailing NULs: a label "\0" would pass)
        return _REFUSED  # read_recording says where
    lines = data.decode("ascii").splitlines()  # (n,) rows; also split at a lone CR or another line break
    try:
        rows = np.loadtxt(lines, delimiter=",", comments=None, ndmin=1,
                          dtype=_LABELLED_ROW if with_label else _ROW)  # (n,) seq, t_us, raw (6,)[, label]
    except ValueError:  # another column count (a row split in two has one), or a field that is not a number
        return _REFUSED  # (or not an integer in seq / t_us)
    if len(rows) != len(lines):  # loadtxt skips blank lines, read_recording refuses them
        return _REFUSED
    seq, t_us, raw = rows["seq"], rows["t_us"], rows["raw"]  # (n,), (n,), (n, 6)
    if np.isinf(raw).any() or not ((seq >= 0) & (seq < SEQ_MODULO)).all() \
            or not ((t_us >= 0) & (t_us < T_US_MODULO)).all():
        return _REFUSED
    codes = None
    if with_label:
        codes = _label_codes(rows["label"])
        if codes is None:
            return _REFUSED
    return seq.copy(), t_us.copy(), np.ascontiguousarray(raw), codes


def _label_codes(labels: np.ndarray) -> np.ndarray | None:
    """(n,) the label column's bytes, zero-padded to LABEL_BYTES -> (n,) uint8 codes; None for a label that is
    not one or may have been cut (read_recording names it). Labels come in runs: only the first row of each run
    is decoded, and the runs are found comparing each row's bytes as LABEL_BYTES / 8 words."""
    text = np.ascontiguousarray(labels).view(np.uint8).reshape(len(labels), LABEL_BYTES)  # (n, LABEL_BYTES)
    if text[:, -1].any():  # a label that fills the column may have been cut: read_recording takes the file
        return None
    words = text.view(np.uint64)  # (n, LABEL_BYTES // 8)
    starts = np.flatnonzero(np.concatenate(([True], (words[1:] != words[:-1]).any(axis=1))))  # (r,) runs
    try:
        run_codes = [LABELS.code(labels[i].decode("ascii").strip()) for i in starts.tolist()]
    except ValueError:
        return None
    return np.repeat(np.array(run_codes, np.uint8), np.diff(np.append(starts, len(labels))))


def _estimate_rate(seq: np.ndarray, t_us: np.ndarray) -> float:
    """The rate from the median device-time step between consecutive seq (as read_recording estimates it,
    over the first block)."""
    consecutive = (np.diff(seq) % SEQ_MODULO) == 1
    steps = (np.diff(t_us) % T_US_MODULO)[consecutive]
    steps = steps[(steps > 0) & (steps < 10_000_000)]
    return 1e6 / float(np.median(steps)) if len(steps) else float(DEFAULT_RATE_HZ)


class WindowLog:
    """A sink keeping of each window only what the replay summary and the plot read (sample_end, label,
    raw_label): ~100 B per window instead of the whole result."""

    def __init__(self) -> None:
        self.ends: list[int] = []
        self.labels: list[str] = []
        self.raw_labels: list[str] = []

    def emit(self, result: dict[str, Any]) -> None:
        self.ends.append(result["sample_end"])
        self.labels.append(result["label"])
        self.raw_labels.append(result["raw_label"])

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self.ends)

    def results(self) -> Iterator[dict[str, Any]]:
        """The windows as result dicts with those three keys, one at a time (truth_summary, plot_timeline)."""
        for e, label, raw in zip(self.ends, self.labels, self.raw_labels):
            yield {"sample_end": e, "label": label, "raw_label": raw}


def paced(blocks: Iterable[SampleBlock], rate_hz: float) -> Iterator[SampleBlock]:
    """`--realtime`: the blocks' samples one at a time on an absolute schedule at rate_hz (no drift
    from sleep overshoot), each stamped when it is handed on."""
    period = 1.0 / rate_hz
    t0 = time.perf_counter()
    i = 0
    for block in blocks:
        for j in range(len(block.seq)):
            delay = t0 + i * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            yield SampleBlock(block.seq[j:j + 1], block.t_us[j:j + 1], block.raw[j:j + 1], time.perf_counter())
            i += 1
