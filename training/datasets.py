"""Data sets for training and evaluation: three kinds, one WindowSet out.

    windows = load_dataset("../shared/data/HAPT_RawData_train_users.zip")      # HAPT raw recordings
    windows = load_dataset("my_recordings/")                                   # your own (docs/datasets.md)
    windows = load_dataset("UCI HAR Dataset.zip", split="test")                # official UCI-HAR windows

- **HAPT** (zip or folder with RawData/labels.txt): continuous recordings, read by the one HAPT reader
  (firmware_bridge.recording.HaptSource). Activities are HAPT's names (the six classes, then the postural
  transitions STAND_TO_SIT ...); those outside the class set are left out (by default the six).
- **Recordings** (a folder with manifest.csv `recording,subject`): the project's recording CSVs with a label
  column, as `har-edge record --label` and `har-edge label` write them. A label outside the class set is an
  error: your own labels are never dropped silently.
- **UCI-HAR** (`UCI HAR Dataset/{train,test}/Inertial Signals`, zip or folder): pre-cut windows, used as given
  (the front-end is not run; `split` picks train or test).

Continuous recordings run through the device's own streaming front-end (edge.frontend), once per recording,
whatever hops are cut; windows of 128 samples start every `hop` samples from the start of each run of
equally labelled samples, so a window never crosses a label change, a gap in `seq` or two recordings.
"""

from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.protocol import SEQ_MODULO
from firmware_bridge.recording import HaptSource, RecordingError, check_label, read_recording

from edge.frontend import CHANNELS, CLASSES, FrontEndConfig, filter_recording

from training.data import DataError, WindowSet

MANIFEST = "manifest.csv"
MANIFEST_COLUMNS = ("recording", "subject")
UCI_SPLITS = ("train", "test")
KINDS = ("hapt", "recordings", "uci")


@dataclass
class LabelledStream:
    """One continuous recording after the front-end, with its labelled runs."""

    name: str                           # the file, for messages
    subject: int
    experiment: int
    channels: np.ndarray                # (n, 9) float64, the front-end over the whole recording
    runs: list[tuple[str, int, int]]    # (label, first, end): samples first..end-1 (0-based) carry label


# ----------------------------------------------------------------------------------------------
# Which kind a path is


def dataset_kind(path: str | Path) -> str:
    """'hapt', 'recordings' or 'uci', or DataError saying what a data set looks like."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; give a data set: the HAPT raw data (zip or folder), a "
                        f"folder of recordings with {MANIFEST} (docs/datasets.md) or 'UCI HAR Dataset' (zip or folder)")
    if path.is_file():
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile:
            what = ("not a readable zip file (truncated download?)" if path.suffix.lower() == ".zip"
                    else "not a data set (not a zip file)")
            raise DataError(f"{path}: {what}; a data set is a folder of recordings with {MANIFEST}, the HAPT raw "
                            "data or 'UCI HAR Dataset', zipped or not (docs/datasets.md)") from None
    else:
        if (path / MANIFEST).is_file():
            return "recordings"
        names = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
    if any(Path(n).name == "labels.txt" and "RawData" in Path(n).parts for n in names) or (
            path.is_dir() and (path / "labels.txt").is_file()):
        return "hapt"
    if any("/Inertial Signals/" in f"/{n}" for n in names):
        return "uci"
    raise DataError(f"{path}: neither a folder of recordings ({MANIFEST} missing), nor the HAPT raw data "
                    "(RawData/labels.txt), nor the UCI-HAR layout ('train/Inertial Signals'); see docs/datasets.md")


# ----------------------------------------------------------------------------------------------
# Continuous recordings -> labelled streams


def label_runs(labels, seqs=None) -> list[tuple[str, int, int]]:
    """Runs of equal, non-empty labels -> [(label, first, end)]; a gap in seq (dropped samples) ends a run."""
    runs = []
    start = None
    for i, label in enumerate(labels):
        gap = seqs is not None and i > 0 and (seqs[i] - seqs[i - 1]) % SEQ_MODULO != 1
        if start is not None and (label != labels[start] or gap):
            runs.append((labels[start], start, i))
            start = None
        if start is None and label is not None:
            start = i
    if start is not None:
        runs.append((labels[start], start, len(labels)))
    return runs


def hapt_streams(path: Path, frontend: FrontEndConfig, subjects=None) -> list[LabelledStream]:
    source = HaptSource(path)
    segments = source.segments()
    streams = []
    for experiment, user in source.experiments():
        if subjects is not None and user not in subjects:
            continue
        raw = np.asarray(source.read_experiment(experiment, user), dtype=np.float64)  # (n, 6)
        bad = ~np.isfinite(raw)  # (n, 6)
        if bad.any():
            row, column = (int(v[0]) for v in np.nonzero(bad))
            name = f"{'acc' if column < 3 else 'gyro'}_exp{experiment:02d}_user{user:02d}.txt"
            raise DataError(f"{source.where(name)}, line {row + 1}: NaN value ({int(bad.any(1).sum())} such "
                            "row(s) in this experiment); repair the file or leave the experiment out")
        runs = []
        for seg in segments:
            if (seg.experiment, seg.user) != (experiment, user):
                continue
            if seg.last > len(raw):
                raise DataError(f"{source.where('labels.txt')}, line {seg.line}: segment {seg.first}..{seg.last} "
                                f"of experiment {experiment} lies outside its recording of {len(raw)} samples")
            runs.append((seg.name, seg.first - 1, seg.last))
        streams.append(LabelledStream(f"{path}:acc_exp{experiment:02d}_user{user:02d}.txt", user, experiment,
                                      filter_recording(raw, frontend), runs))  # channels (n, 9)
    return streams


def read_manifest(folder: Path) -> list[tuple[Path, int]]:
    """manifest.csv -> [(recording path, subject id)], every row and every CSV of the folder checked."""
    manifest = folder / MANIFEST
    rows = list(csv.reader(manifest.read_text(encoding="utf-8", errors="replace").splitlines()))
    header = [h.strip() for h in rows[0]] if rows else []
    if header != list(MANIFEST_COLUMNS):
        raise DataError(f"{manifest}, line 1: header is {','.join(header)!r}; a manifest starts with "
                        f"'{','.join(MANIFEST_COLUMNS)}' and lists one recording per line (docs/datasets.md)")
    entries: list[tuple[Path, int]] = []
    seen: dict[str, int] = {}
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) != 2:
            raise DataError(f"{manifest}, line {line_no}: {len(row)} columns; write 'recording,subject' "
                            "(a CSV file of this folder and the wearer's integer id)")
        name, subject_text = row[0].strip(), row[1].strip()
        try:
            subject = int(subject_text)
        except ValueError:
            subject = -1
        if subject < 0:
            raise DataError(f"{manifest}, line {line_no}: subject {subject_text!r} is not a whole number >= 0; "
                            "give each wearer one integer id (recordings of one wearer share it)")
        if name in seen:
            raise DataError(f"{manifest}, line {line_no}: {name} is listed twice (first on line {seen[name]}); "
                            "list each recording once")
        seen[name] = line_no
        recording = folder / name
        if not recording.is_file():
            raise DataError(f"{manifest}, line {line_no}: recording {name} does not exist in {folder}; "
                            "fix the name or remove the line")
        entries.append((recording, subject))
    if not entries:
        raise DataError(f"{manifest}: lists no recordings; add one line 'FILE.csv,SUBJECT' per recording")
    listed = {p.resolve() for p, _ in entries}
    unlisted = sorted(p.name for p in folder.glob("*.csv") if p.name != MANIFEST and p.resolve() not in listed)
    if unlisted:
        raise DataError(f"{manifest}: recording(s) {unlisted} of the folder are not listed; add them with their "
                        "subject id (or move them out of the folder): nothing is left out silently")
    return entries


def recording_streams(folder: Path, frontend: FrontEndConfig, subjects=None) -> list[LabelledStream]:
    streams = []
    for experiment, (path, subject) in enumerate(read_manifest(folder), start=1):
        if subjects is not None and subject not in subjects:
            continue
        if path.suffix.lower() != ".csv":
            raise DataError(f"{folder / MANIFEST}: {path.name} is not a recording CSV; a data set holds labelled "
                            "CSVs (har-edge record --label, har-edge label)")
        recording = read_recording(path)
        if recording.labels is None:
            raise DataError(f"{path}: no label column; label it with `har-edge label {path.name} SEGMENTS.csv "
                            "--out FILE` or record it with --label NAME")
        if recording.nan_samples:
            raise DataError(f"{path}: {recording.nan_samples} sample(s) hold NaN; cut them out (or split the "
                            "recording there) before training on it")
        if abs(recording.rate_hz - frontend.sample_rate_hz) > 0.02 * frontend.sample_rate_hz:
            raise DataError(f"{path}: sampled at {recording.rate_hz:.2f} Hz, the front-end expects "
                            f"{frontend.sample_rate_hz:g} Hz; record at that rate")
        raw = np.array([s.values() for s in recording.samples], dtype=np.float64)  # (n, 6)
        runs = label_runs(recording.labels, [s.seq for s in recording.samples])
        streams.append(LabelledStream(str(path), subject, experiment, filter_recording(raw, frontend), runs))
    return streams


# ----------------------------------------------------------------------------------------------
# The official UCI-HAR layout: UCI HAR Dataset/{train,test}/Inertial Signals/<channel>_<split>.txt


def parse_matrix(text: str, name: str, n_cols: int) -> np.ndarray:
    """Whitespace-separated numbers, `n_cols` per line -> (rows, n_cols) float64, or DataError."""
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataError(f"{name}: the file is empty; expected {n_cols} numbers per line")
    try:
        values = np.loadtxt(io.StringIO(text), dtype=np.float64, ndmin=2)
    except ValueError:
        values = None
    if values is None or values.shape != (len(lines), n_cols):
        for number, line in enumerate(lines, start=1):
            fields = line.split()
            if len(fields) != n_cols:
                raise DataError(f"{name}, line {number}: expected {n_cols} numbers, found {len(fields)} "
                                f"({line.strip()[:60]!r}); the file may be truncated or not of this kind")
            try:
                [float(f) for f in fields]
            except ValueError:
                raise DataError(f"{name}, line {number}: not a number in {line.strip()[:60]!r}") from None
        raise DataError(f"{name}: could not be read as {n_cols} numbers per line")
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        number = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(f"{name}, line {number}: NaN or infinite value ({lines[number - 1].strip()[:60]!r}); "
                        f"{int(bad.sum())} such line(s) in all; repair or drop it")
    return values


def load_uci_windows(path: str | Path, split: str = "train") -> WindowSet:
    """The pre-cut windows of one split, as given -> WindowSet (X in CHANNELS order, labels of y_<split>.txt).
    subject_<split>.txt gives the wearers when present; without it every window has subject 0."""
    path = Path(path)
    if split not in UCI_SPLITS:
        raise DataError(f"split {split!r}: the UCI-HAR layout has the splits {', '.join(UCI_SPLITS)}")
    if path.is_file():
        try:
            archive = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise DataError(f"{path}: not a readable zip file") from None
        members = {n.split("UCI HAR Dataset/", 1)[-1]: n for n in archive.namelist()}

        def read(rel: str) -> str | None:
            return archive.read(members[rel]).decode("ascii", "replace") if rel in members else None
    else:
        root = path / "UCI HAR Dataset" if (path / "UCI HAR Dataset").is_dir() else path

        def read(rel: str) -> str | None:
            p = root / rel
            return p.read_text(encoding="ascii", errors="replace") if p.is_file() else None

    signals = []
    for channel in CHANNELS:
        rel = f"{split}/Inertial Signals/{channel}_{split}.txt"
        text = read(rel)
        if text is None:
            raise DataError(f"{path}: '{rel}' is missing; the official layout has 9 signal files per split"
                            + (" (this copy may hold another split only)" if channel == CHANNELS[0] else ""))
        signals.append(parse_matrix(text, rel, 128))
    counts = {len(s) for s in signals}
    if len(counts) != 1:
        raise DataError(f"{path}: the 9 signal files of '{split}' have different row counts {sorted(counts)}")
    n = len(signals[0])
    y_text = read(f"{split}/y_{split}.txt")
    if y_text is None:
        raise DataError(f"{path}: '{split}/y_{split}.txt' is missing")
    y = parse_matrix(y_text, f"{split}/y_{split}.txt", 1)[:, 0].astype(np.int64)
    if len(y) != n:
        raise DataError(f"{path}: {len(y)} labels in y_{split}.txt but {n} windows")
    if ((y < 1) | (y > len(CLASSES))).any():
        raise DataError(f"{path}: y_{split}.txt holds activity ids outside 1..{len(CLASSES)}")
    subject_text = read(f"{split}/subject_{split}.txt")
    subject = (np.zeros(n, np.int64) if subject_text is None else
               parse_matrix(subject_text, f"subject_{split}.txt", 1)[:, 0].astype(np.int64))
    if len(subject) != n:
        raise DataError(f"{path}: {len(subject)} rows in subject_{split}.txt but {n} windows")
    X = np.stack(signals, axis=-1).astype(np.float32)  # (N, 128, 9)
    return WindowSet(X, y - 1, subject, np.full(n, -1, np.int64), np.arange(n, dtype=np.int64), CLASSES)


# ----------------------------------------------------------------------------------------------
# Streams -> windows, and the one entry point


def cut_windows(streams: list[LabelledStream], classes: tuple[str, ...], size: int, hop: int,
                strict: bool) -> WindowSet:
    """Windows of `size` every `hop` from the start of each run whose label is a class. A label outside
    `classes` is an error when `strict` (the user's own recordings), else left out (HAPT's fixed activities)."""
    index = {name: i for i, name in enumerate(classes)}
    parts: dict[str, list] = {k: [] for k in ("X", "y", "subject", "experiment", "start")}
    for stream in streams:
        for label, first, end in stream.runs:
            if label not in index:
                if strict:
                    raise DataError(f"{stream.name}, line {first + 2}: label {label!r} is not in the class set "
                                    f"{list(classes)}; relabel, or train with it in the class set (har-train fit --set "
                                    "classes=[...]); a trained model is evaluated on data of its own classes")
                continue
            starts = np.arange(first, end - size + 1, hop)  # window inside [first, end)
            if len(starts) == 0:
                continue
            parts["X"].append(np.stack([stream.channels[s:s + size] for s in starts]))  # (k, size, 9)
            parts["y"].append(np.full(len(starts), index[label]))
            parts["subject"].append(np.full(len(starts), stream.subject))
            parts["experiment"].append(np.full(len(starts), stream.experiment))
            parts["start"].append(starts)
    if not parts["X"]:
        none = np.zeros(0, np.int64)  # (0,)
        return WindowSet(np.zeros((0, size, len(CHANNELS)), np.float32), none, none.copy(), none.copy(), none.copy(),
                         classes)
    return WindowSet(np.concatenate(parts["X"]).astype(np.float32), np.concatenate(parts["y"]).astype(np.int64),
                     np.concatenate(parts["subject"]).astype(np.int64),
                     np.concatenate(parts["experiment"]).astype(np.int64),
                     np.concatenate(parts["start"]).astype(np.int64), classes)


def default_classes(streams: list[LabelledStream]) -> tuple[str, ...]:
    """The labels found, the six default classes first in their order, then the others alphabetically."""
    found = {label for s in streams for label, _, _ in s.runs}
    return tuple(c for c in CLASSES if c in found) + tuple(sorted(found - set(CLASSES)))


def load_dataset_hops(path: str | Path, hops, frontend: FrontEndConfig = FrontEndConfig(), *, classes=(),
                      subjects=None, split: str = "train") -> dict[int, WindowSet]:
    """{hop: windows} of any data set kind; the front-end runs once per recording whatever the hops.
    `classes` = () takes the data's own (HAPT, UCI: the six; recordings: the labels found)."""
    path = Path(path)
    kind = dataset_kind(path)
    wanted = None if subjects is None else {int(s) for s in subjects}
    for name in classes:
        try:
            check_label(name, "classes")
        except RecordingError as exc:
            raise DataError(str(exc)) from None
    if kind != "uci" and split != "train":
        raise DataError(f"{path}: a {kind} data set has no {split!r} split (only UCI-HAR has train/test); "
                        "choose subjects instead (--set subjects=[...])")
    try:
        if kind == "uci":
            windows = load_uci_windows(path, split)
            if frontend.window != windows.X.shape[1]:
                raise DataError(f"{path}: UCI-HAR windows are {windows.X.shape[1]} samples, the model's "
                                f"front-end cuts {frontend.window}")
            if wanted is not None:
                windows = windows.of_subjects(wanted)
            windows = relabel(windows, tuple(classes) or CLASSES)
            by_hop = {hop: windows for hop in hops}  # pre-cut: the hop is the data set's own (64)
        else:
            streams = (hapt_streams(path, frontend, wanted) if kind == "hapt"
                       else recording_streams(path, frontend, wanted))
            names = tuple(classes) or (CLASSES if kind == "hapt" else default_classes(streams))
            by_hop = {hop: cut_windows(streams, names, frontend.window, hop, strict=kind == "recordings")
                      for hop in hops}
    except RecordingError as exc:
        raise DataError(str(exc)) from None
    first = by_hop[next(iter(by_hop))]
    if len(first) == 0:
        raise DataError(f"{path}: no labelled windows of {frontend.window} samples"
                        + (f" for subjects {sorted(wanted)}" if wanted else "")
                        + f" of the classes {list(first.classes)}")
    return by_hop


def load_dataset(path: str | Path, frontend: FrontEndConfig = FrontEndConfig(), *, classes=(), subjects=None,
                 split: str = "train") -> WindowSet:
    """The windows of any data set at the front-end's hop (as the device cuts them)."""
    return load_dataset_hops(path, (frontend.hop,), frontend, classes=classes, subjects=subjects,
                             split=split)[frontend.hop]


def relabel(windows: WindowSet, classes: tuple[str, ...]) -> WindowSet:
    """The windows whose label is in `classes`, re-indexed to that order (others left out)."""
    index = {name: i for i, name in enumerate(classes)}
    mapping = np.array([index.get(name, -1) for name in windows.classes], np.int64)  # old index -> new
    new_y = mapping[windows.y] if len(windows) else windows.y
    kept = windows.select(new_y >= 0)
    return WindowSet(kept.X, new_y[new_y >= 0], kept.subject, kept.experiment, kept.start, classes,
                     kept.channels)

