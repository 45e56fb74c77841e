"""Helpers shared by the test files (fixtures live in conftest.py, real services in services.py): where the
repository and its bundles are, small real excerpts of the HAPT data, and readers of what `har-edge` writes.
Test files import from here, never from one another."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from firmware_bridge.protocol import SEQ_MODULO, Sample
from firmware_bridge.recording import (
    HAPT_ACTIVITIES,
    HaptSource,
    hapt_sample_labels,
    read_recording,
    write_recording_csv,
)

from edge.frontend import CLASSES, FrontEndConfig
from edge.model import Model
from edge.sources import SampleBlock

REPO = Path(__file__).resolve().parent.parent
SHIPPED_BUNDLE = REPO / "edge" / "models" / "default"
TINY_BUNDLE = REPO / "tests" / "data" / "tiny_bundle"  # the export tests' stored bundle (small, trained; har-bundle/1)


def find_bundle() -> Path | None:
    """HAR_EDGE_TEST_BUNDLE if set, else the shipped model, else the export tests' tiny bundle; None if none."""
    for candidate in (os.environ.get("HAR_EDGE_TEST_BUNDLE"), SHIPPED_BUNDLE, TINY_BUNDLE):
        if candidate and (Path(candidate) / "bundle.json").is_file():
            return Path(candidate)
    return None


# ---- real HAPT data ---------------------------------------------------------------------------------
def read_hapt_raw(hapt_dir, experiment=1, user=1, n=None) -> np.ndarray:
    folder = hapt_dir / "RawData"
    acc = np.loadtxt(folder / f"acc_exp{experiment:02d}_user{user:02d}.txt")
    gyro = np.loadtxt(folder / f"gyro_exp{experiment:02d}_user{user:02d}.txt")
    return np.concatenate([acc, gyro], axis=1)[:n]  # (n, 6)


def sample_block(raw: np.ndarray, first: int = 0) -> SampleBlock:
    n = len(raw)
    seq = (first + np.arange(n)) % SEQ_MODULO
    return SampleBlock(seq.astype(np.int64), (first + np.arange(n)) * 20_000, raw, 0.0)


def excerpt(hapt_recording, tmp_path, n: int) -> Path:
    """The first n real samples as a recording CSV, in the float32 the wire carries."""
    samples = read_recording(hapt_recording).samples[:n]
    wire = [Sample(s.seq, s.t_us, *map(float, np.float32(s.values()))) for s in samples]
    path = tmp_path / f"excerpt{n}.csv"
    write_recording_csv(path, wire)
    return path


def own_recordings(folder, hapt_dir, experiments=((1, 1), (2, 1)), subject=7, transition="TRANSITION"):
    """Real HAPT experiments written as the project's labelled recording CSVs (the six classes, and the
    postural transitions 7-12 as one class named `transition`), with a manifest: a data set of one's own."""
    folder.mkdir(parents=True, exist_ok=True)
    source = HaptSource(hapt_dir)
    segments = source.segments()
    lines = ["recording,subject"]
    for experiment, user in experiments:
        rows = source.read_experiment(experiment, user)
        labels = hapt_sample_labels(segments, experiment, user, len(rows), keep=HAPT_ACTIVITIES)
        labels = [transition if label in HAPT_ACTIVITIES[6:] else label for label in labels]
        samples = [Sample(i % SEQ_MODULO, i * 20000, *r) for i, r in enumerate(rows)]
        name = f"exp{experiment:02d}.csv"
        write_recording_csv(folder / name, samples, labels)
        lines.append(f"{name},{subject}")
    (folder / "manifest.csv").write_text("\n".join(lines) + "\n")
    return folder


# ---- a model without a bundle -----------------------------------------------------------------------
class CentroidSession:
    """Stand-in for an inference session: logits = -distance of window statistics to class centroids."""

    def __init__(self, X: np.ndarray, y: np.ndarray):
        feats = self.features(X)  # (N, 18)
        self.centroids = np.stack([feats[y == c].mean(axis=0) for c in range(len(CLASSES))])  # (6, 18)
        self.calls = 0

    @staticmethod
    def features(x: np.ndarray) -> np.ndarray:
        return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=1)  # (k, 18)

    def predict(self, windows: np.ndarray) -> np.ndarray:
        assert windows.dtype == np.float32 and windows.shape[1:] == (128, 9)
        self.calls += 1
        d = ((self.features(windows)[:, None, :] - self.centroids[None]) ** 2).sum(-1)  # (k, 6)
        return (-d).astype(np.float32)


def build_standin_model(hapt_dir) -> Model:
    """A nearest-centroid classifier fitted on user 1's labelled windows, with the inference session's interface."""
    from training.data import fit_normalization
    from training.datasets import load_dataset

    windows = load_dataset(hapt_dir, subjects=[1])
    mean, std = fit_normalization(windows.X)
    session = CentroidSession(((windows.X - mean) / std).astype(np.float32), windows.y)
    return Model(CLASSES, mean.astype(np.float32), std.astype(np.float32), FrontEndConfig(), session, "stand-in")


# ---- what har-edge writes ---------------------------------------------------------------------------
def read_jsonl(path: Path, kind: str = "window") -> list[dict]:
    """The window lines (no "type" key) or the status lines ("type": "status") of a JSONL output."""
    objects = [json.loads(line) for line in path.read_text().splitlines()]
    return [o for o in objects if o.get("type", "window") == kind]


def jsonl_count(path: Path) -> int:
    """Window lines written so far (status lines, which carry a "type" key, are not windows)."""
    if not path.exists():
        return 0
    # Only complete lines: the file is polled while har-edge writes it.
    return sum('"type":' not in line for line in path.read_text().split("\n")[:-1])


def expected_windows(n: int) -> int:
    """Windows of 128 samples, hop 64, in a stream of n samples."""
    return len(range(128, n + 1, 64))
