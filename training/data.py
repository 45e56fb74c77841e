"""Training data: the window set, train-only normalization, subject-wise folds, the default data path.

The readers of each data set kind (HAPT, your own recordings, UCI-HAR) are in training/datasets.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from firmware_bridge.recording import HAPT_ARCHIVE, data_root

from edge.frontend import CHANNELS, CLASSES
from edge.mount import MountConfig, align_by_subject

# UCI-HAR's split: the 21 training users (their raw recordings are in ../shared/data) and the 9
# test users held back for final judgement outside this project.
TRAIN_SUBJECTS: tuple[int, ...] = (1, 3, 5, 6, 7, 8, 11, 14, 15, 16, 17, 19, 21, 22, 23, 25, 26, 27, 28, 29, 30)


def default_hapt_path() -> Path:
    """The HAPT raw data zip in the shared data folder (firmware_bridge.recording.data_root())."""
    return data_root() / HAPT_ARCHIVE


def resolve_data_path(text: str | Path | None) -> Path:
    """A data set path as configured: empty = the HAPT zip under data_root(); else as given when absolute or
    present relative to the cwd, else relative to the repository root (a checkpoint's train_config names its
    data from there) when it is there; else as given, so that the error names the path the user typed."""
    if not text:
        return default_hapt_path()
    path = Path(text).expanduser()
    if path.is_absolute() or path.exists():
        return path
    in_repository = Path(__file__).resolve().parent.parent / path
    return in_repository if in_repository.exists() else path


class DataError(ValueError):
    """A data file that cannot be used; the message names the file, the line and what to do."""


@dataclass
class WindowSet:
    """Front-end windows with their provenance. X is un-normalized."""

    X: np.ndarray            # (N, 128, 9) float32
    y: np.ndarray            # (N,) int64, index into classes
    subject: np.ndarray      # (N,) int64
    experiment: np.ndarray   # (N,) int64 (-1: pre-cut UCI-HAR windows)
    start: np.ndarray        # (N,) int64, first raw sample of the window in its recording (UCI: row number)
    classes: tuple[str, ...] = CLASSES
    channels: tuple[str, ...] = CHANNELS

    def __len__(self) -> int:
        return len(self.y)

    def select(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(self.X[mask], self.y[mask], self.subject[mask], self.experiment[mask],
                         self.start[mask], self.classes, self.channels)

    def of_subjects(self, subjects) -> WindowSet:
        return self.select(np.isin(self.subject, list(subjects)))


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


def checkpoint_inputs(windows: WindowSet, checkpoint: dict) -> np.ndarray:
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
        raise DataError(f"cannot make {k} folds from {len(unique)} subject(s) {unique.tolist()}: set fewer folds "
                        "(--set folds=K, at least 2); for `fit`, also: hold subjects out with val_subjects, or "
                        "train_all=true (cross-validation needs two subjects or more; a data set without subject "
                        "ids, like the UCI-HAR subset, has one subject 0)")
    order = np.random.default_rng(seed).permutation(unique)
    groups = np.array_split(order, k)
    return [
        (sorted(int(s) for s in unique if s not in set(g.tolist())), sorted(int(s) for s in g))
        for g in groups
    ]
