"""Training data: raw HAPT recordings -> front-end windows, the official UCI-HAR layout, statistics.

Windows are made by running the device's own streaming front-end (`edge.frontend`) over each
whole raw experiment, then cutting 128-sample windows every 64 samples from the start of each
labelled segment of classes 1-6 (the UCI-HAR grid). A window never crosses a segment boundary,
so it never crosses two experiments or two subjects either.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge.frontend import CHANNELS, FrontEndConfig, filter_recording
from edge.mount import MountConfig, align_by_subject

from firmware_bridge.recording import CLASSES as CLASS_NAMES  # noqa: E402  (index = HAPT activity id - 1)

# UCI-HAR's split: the 21 training users (their raw recordings are in ../shared/data) and the 9
# test users held back for final judgement outside this project.
TRAIN_SUBJECTS: tuple[int, ...] = (1, 3, 5, 6, 7, 8, 11, 14, 15, 16, 17, 19, 21, 22, 23, 25, 26, 27, 28, 29, 30)
# The data set lives beside the repository (../shared/data) unless HAR_SHARED_DATA points elsewhere.
SHARED_DATA_DIR = Path(os.environ.get("HAR_SHARED_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data"))
DEFAULT_HAPT_PATH = SHARED_DATA_DIR / "HAPT_RawData_train_users.zip"

_EXPERIMENT_FILE = re.compile(r"acc_exp(\d+)_user(\d+)\.txt$")


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the line and what to do."""


@dataclass
class WindowSet:
    """Front-end windows with their provenance. X is un-normalized."""

    X: np.ndarray            # (N, 128, 9) float32
    y: np.ndarray            # (N,) int64, 0..5
    subject: np.ndarray      # (N,) int64
    experiment: np.ndarray   # (N,) int64
    start: np.ndarray        # (N,) int64, first raw sample of the window in its experiment
    classes: tuple[str, ...] = CLASS_NAMES
    channels: tuple[str, ...] = CHANNELS

    def __len__(self) -> int:
        return len(self.y)

    def select(self, mask: np.ndarray) -> "WindowSet":
        return WindowSet(self.X[mask], self.y[mask], self.subject[mask], self.experiment[mask],
                         self.start[mask], self.classes, self.channels)

    def of_subjects(self, subjects) -> "WindowSet":
        return self.select(np.isin(self.subject, list(subjects)))


# ----------------------------------------------------------------------------------------------
# Reading text matrices with errors that name the file and line


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
                raise DataError(
                    f"{name}, line {number}: expected {n_cols} numbers, found {len(fields)} "
                    f"({line.strip()[:60]!r}); the file may be truncated or not of this kind"
                )
            try:
                [float(f) for f in fields]
            except ValueError:
                raise DataError(f"{name}, line {number}: not a number in {line.strip()[:60]!r}") from None
        raise DataError(f"{name}: could not be read as {n_cols} numbers per line")
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        number = int(np.flatnonzero(bad)[0]) + 1
        raise DataError(
            f"{name}, line {number}: NaN or infinite value ({lines[number - 1].strip()[:60]!r}); "
            f"{int(bad.sum())} such line(s) in all; repair or drop the recording"
        )
    return values


class _Source:
    """A HAPT 'RawData' folder, given as a zip file or a directory (anywhere above RawData/)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(
                f"{self.path}: no such file or folder; pass the HAPT raw data zip or its extracted folder"
            )
        if self.path.is_file():
            try:
                self._zip = zipfile.ZipFile(self.path)
            except zipfile.BadZipFile:
                raise DataError(f"{self.path}: not a readable zip file (truncated download?)") from None
            names = self._zip.namelist()
        else:
            self._zip = None
            names = [str(p.relative_to(self.path)) for p in self.path.rglob("*") if p.is_file()]
        self.files = {Path(n).name: n for n in names if "RawData" in Path(n).parts or Path(n).name == "labels.txt"}
        if "labels.txt" not in self.files:
            raise DataError(f"{self.path}: no RawData/labels.txt inside; is this the HAPT raw data set?")

    def read_text(self, name: str, what: str) -> str:
        if name not in self.files:
            raise DataError(f"{self.path}: {what} '{name}' is missing; the recording cannot be used without it")
        member = self.files[name]
        raw = self._zip.read(member) if self._zip else (self.path / member).read_bytes()
        return raw.decode("ascii", errors="replace")

    def experiments(self) -> list[tuple[int, int]]:
        found = []
        for name in self.files:
            m = _EXPERIMENT_FILE.match(name)
            if m:
                found.append((int(m.group(1)), int(m.group(2))))
        return sorted(found)


def read_hapt_labels(text: str, name: str = "labels.txt") -> np.ndarray:
    """labels.txt rows: experiment, user, activity, first, last (1-based, inclusive) -> (rows, 5) int64."""
    table = parse_matrix(text, name, 5)
    if (table != np.round(table)).any():
        row = int(np.flatnonzero((table != np.round(table)).any(axis=1))[0]) + 1
        raise DataError(f"{name}, line {row}: label rows must be integers")
    return table.astype(np.int64)


def read_hapt_experiment(source: _Source, experiment: int, user: int) -> np.ndarray:
    """One experiment's raw samples (n, 6): acc (g, with gravity) then gyro (rad/s)."""
    acc_name = f"acc_exp{experiment:02d}_user{user:02d}.txt"
    gyro_name = f"gyro_exp{experiment:02d}_user{user:02d}.txt"
    acc = parse_matrix(source.read_text(acc_name, "accelerometer file"), acc_name, 3)
    gyro = parse_matrix(source.read_text(gyro_name, "gyroscope file"), gyro_name, 3)
    if len(acc) != len(gyro):
        raise DataError(
            f"{acc_name} has {len(acc)} samples but {gyro_name} has {len(gyro)}; "
            "the two files of one experiment must have one row per sample each"
        )
    return np.hstack([acc, gyro])


def cut_windows(parts: dict, channels: np.ndarray, starts: np.ndarray, size: int, label: int, user: int,
                experiment: int) -> None:
    """Append the windows channels[s:s + size] (filtered (n, 9)) starting at `starts` to parts' lists."""
    parts["X"].append(np.stack([channels[s:s + size] for s in starts]))  # (k, 128, 9)
    parts["y"].append(np.full(len(starts), label))
    parts["subject"].append(np.full(len(starts), user))
    parts["experiment"].append(np.full(len(starts), experiment))
    parts["start"].append(starts)


def load_hapt_windows(
    path: str | Path = DEFAULT_HAPT_PATH,
    subjects=None,
    config: FrontEndConfig = FrontEndConfig(),
) -> WindowSet:
    """Run the front-end over every raw experiment (of `subjects`, default all) and cut windows."""
    source = _Source(path)
    labels = read_hapt_labels(source.read_text("labels.txt", "label file"))
    wanted = None if subjects is None else {int(s) for s in subjects}
    size, hop = config.window, config.hop
    parts: dict[str, list] = {k: [] for k in ("X", "y", "subject", "experiment", "start")}
    for experiment, user in source.experiments():
        if wanted is not None and user not in wanted:
            continue
        raw = read_hapt_experiment(source, experiment, user)       # (n, 6)
        channels = filter_recording(raw, config)                   # (n, 9) whole experiment, causal
        rows = labels[(labels[:, 0] == experiment) & (labels[:, 1] == user)]
        for row_number, (_, _, activity, first, last) in zip(np.flatnonzero((labels[:, 0] == experiment) & (labels[:, 1] == user)) + 1, rows):
            if first < 1 or last > len(raw) or first > last:
                raise DataError(
                    f"labels.txt, line {row_number}: segment {first}..{last} of experiment {experiment} "
                    f"lies outside its recording of {len(raw)} samples"
                )
            if not 1 <= activity <= len(CLASS_NAMES):
                continue  # postural transitions (7-12) are not classes here
            starts = np.arange(first - 1, last - size + 1, hop)     # 0-based, window inside [first-1, last)
            if len(starts) == 0:
                continue
            cut_windows(parts, channels, starts, size, activity - 1, user, experiment)
    if not parts["X"]:
        raise DataError(f"{path}: no labelled windows found" + (f" for subjects {sorted(wanted)}" if wanted else ""))
    return WindowSet(
        X=np.concatenate(parts["X"]).astype(np.float32),
        y=np.concatenate(parts["y"]).astype(np.int64),
        subject=np.concatenate(parts["subject"]).astype(np.int64),
        experiment=np.concatenate(parts["experiment"]).astype(np.int64),
        start=np.concatenate(parts["start"]).astype(np.int64),
    )


# ----------------------------------------------------------------------------------------------
# The official UCI-HAR layout: UCI HAR Dataset/{train,test}/Inertial Signals/<channel>_<split>.txt


def load_uci_inertial(path: str | Path, split: str = "train") -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """-> (X (N,128,9) float32 in CHANNELS order, y (N,) int64 0..5, subject (N,) or None)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; pass 'UCI HAR Dataset' (folder or zip)")
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
            raise DataError(f"{path}: '{rel}' is missing; the official layout has 9 signal files per split")
        signals.append(parse_matrix(text, rel, 128))
    counts = {len(s) for s in signals}
    if len(counts) != 1:
        raise DataError(f"{path}: the 9 signal files of '{split}' have different row counts {sorted(counts)}")
    y_text = read(f"{split}/y_{split}.txt")
    if y_text is None:
        raise DataError(f"{path}: '{split}/y_{split}.txt' is missing")
    y = parse_matrix(y_text, f"{split}/y_{split}.txt", 1)[:, 0].astype(np.int64) - 1
    if len(y) != len(signals[0]):
        raise DataError(f"{path}: {len(y)} labels in y_{split}.txt but {len(signals[0])} windows")
    subject_text = read(f"{split}/subject_{split}.txt")
    subject = None if subject_text is None else parse_matrix(subject_text, f"subject_{split}.txt", 1)[:, 0].astype(np.int64)
    X = np.stack(signals, axis=-1).astype(np.float32)  # (N, 128, 9)
    return X, y, subject


# ----------------------------------------------------------------------------------------------
# Statistics and subject-wise splits


def fit_normalization(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel z-score statistics over all samples of the (training) windows X (N,128,9)."""
    flat = X.reshape(-1, X.shape[-1]).astype(np.float64)  # (N*128, 9)
    mean = flat.mean(axis=0)
    std = np.maximum(flat.std(axis=0), 1e-6)
    return mean.astype(np.float32), std.astype(np.float32)


def normalize(X: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((X - mean) / std).astype(np.float32)


def checkpoint_inputs(windows: "WindowSet", checkpoint: dict) -> np.ndarray:
    """Windows as a checkpoint's model expects them: mount-aligned per subject (each wearer calibrated on
    their own moving windows) when the checkpoint was trained so, then normalized -> (N, 128, 9) float32."""
    X = windows.X
    if checkpoint.get("mount"):
        X = align_by_subject(X, windows.subject, MountConfig.from_dict(checkpoint["mount"], "checkpoint mount"))
    mean = np.asarray(checkpoint["norm"]["mean"], np.float32)
    std = np.asarray(checkpoint["norm"]["std"], np.float32)
    return normalize(X, mean, std)


def subject_folds(subjects, k: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Split the distinct subjects into k disjoint validation groups -> [(train, val), ...]."""
    unique = np.unique(np.asarray(list(subjects)))
    if not 2 <= k <= len(unique):
        raise DataError(f"cannot make {k} folds from {len(unique)} subjects")
    order = np.random.default_rng(seed).permutation(unique)
    groups = np.array_split(order, k)
    return [
        (sorted(int(s) for s in unique if s not in set(g.tolist())), sorted(int(s) for s in g))
        for g in groups
    ]
