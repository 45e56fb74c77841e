"""Where the shipped model's score on the UCI-HAR subset differs from its score on the same users' HAPT windows.

    python scripts/uci_gaps.py [--bundle edge/models/default] [--backend tflite --precision int8]

Scores, side by side in one run, the bundle on: (a) the HAPT windows of the 21 training users as training cuts
them, each wearer mount-calibrated on their own windows; (b) the same windows with all wearers pooled into one
calibration (the UCI subset has no subject file); (c) as (b) with every value rounded to 4 significant digits
(as the UCI subset is); (d) the UCI subset itself. Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from firmware_bridge.recording import data_root  # noqa: E402

from edge.mount import align_by_subject  # noqa: E402

from training.data import default_hapt_path, normalize  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.evaluate import load_scorer  # noqa: E402
from training.metrics import classification_report  # noqa: E402


def round_significant(x: np.ndarray, digits: int = 4) -> np.ndarray:
    """x rounded to `digits` significant digits, elementwise (zeros stay zero)."""
    magnitude = np.floor(np.log10(np.abs(np.where(x == 0, 1.0, x))))
    scale = 10.0 ** (digits - 1 - magnitude)
    return (np.round(x * scale) / scale).astype(x.dtype)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", default="edge/models/default")
    parser.add_argument("--backend", default="tflite")
    parser.add_argument("--precision", default="int8")
    args = parser.parse_args()
    classes, frontend, mount, mean, std, logits, description = load_scorer(args.bundle, args.backend, args.precision)

    def score(X: np.ndarray, y: np.ndarray, subjects: np.ndarray) -> dict:
        if mount is not None:
            X = align_by_subject(X, subjects, mount)
        return classification_report(y, logits(normalize(X, mean, std)).argmax(1), list(classes))

    hapt = load_dataset(default_hapt_path(), frontend, classes=classes)
    uci = load_dataset(data_root() / "UCI_HAR_subset_train_4sigdig.zip", frontend, classes=classes)
    pooled = np.zeros_like(hapt.subject)
    rows = {
        "(a) HAPT windows, per-wearer calibration": score(hapt.X, hapt.y, hapt.subject),
        "(b) HAPT windows, one pooled calibration": score(hapt.X, hapt.y, pooled),
        "(c) (b) + 4 significant digits": score(round_significant(hapt.X), hapt.y, pooled),
        "(d) UCI-HAR subset (pooled, 4 digits)": score(uci.X, uci.y, uci.subject),
    }
    print(f"{description}")
    print(f"{'windows scored':<44}{'n':>6}{'acc %':>8}{'mF1 %':>8}  recall SIT / STAND")
    for name, r in rows.items():
        print(f"{name:<44}{r['n_windows']:>6}{100 * r['accuracy']:>8.2f}{100 * r['macro_f1']:>8.2f}  "
              f"{r['per_class']['SITTING']['recall']:.3f} / {r['per_class']['STANDING']['recall']:.3f}")


if __name__ == "__main__":
    main()
