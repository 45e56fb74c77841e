"""Subject-wise k-fold cross-validation: every subject is held out exactly once, never seen in training
or in normalization of its fold. The data is loaded once; each fold is a full `fit` into OUT/fold_<i>.

OUT/cv_summary.json: per-fold accuracy / macro-F1 / best epoch / subjects, mean and sample std over folds,
pooled (all held-out windows together) report, train seconds per epoch.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np

from training.config import ConfigError, TrainConfig
from training.data import subject_folds
from training.metrics import classification_report, confusion_text


def fold_checkpoints(run_dir: str | Path) -> list[Path]:
    """The fold_K/model.pt files of a `har-train cv --out run_dir` folder, in fold order."""
    folds = sorted(Path(run_dir).glob("fold_*/model.pt"))
    if not folds:
        raise ConfigError(f"no fold_K/model.pt in {run_dir}; run `har-train cv --out {run_dir}` first")
    return folds


def cross_validate(config: TrainConfig, out_dir: str | Path) -> dict:
    from training.train import fit, load_windows  # late import keeps `har-train models` light

    if config.train_all:
        raise ConfigError("cross-validation holds subjects out: set train_all=false")
    if config.val_subjects:
        raise ConfigError("cross-validation chooses the held-out subjects itself: leave val_subjects empty")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    windows, train_windows = load_windows(config)
    folds = subject_folds(np.unique(windows.subject), config.folds, config.seed)

    per_fold, y_true, y_pred = [], [], []
    for i, (_train_subjects, val_subjects) in enumerate(folds):
        fold_config = replace(config, val_subjects=list(val_subjects), val_fold=0)
        metrics = fit(fold_config, out_dir / f"fold_{i}", windows=windows, train_windows=train_windows)
        confusion = np.asarray(metrics["val"]["confusion"])  # (6, 6) true x predicted
        for t in range(confusion.shape[0]):  # rebuild label pairs to pool all held-out windows
            for p in range(confusion.shape[1]):
                y_true += [t] * int(confusion[t, p])
                y_pred += [p] * int(confusion[t, p])
        per_fold.append({
            "fold": i, "val_subjects": val_subjects, "n_val_windows": metrics["n_val_windows"],
            "accuracy": metrics["val"]["accuracy"], "macro_f1": metrics["val"]["macro_f1"],
            "best_epoch": metrics["best_epoch"], "train_seconds_per_epoch": metrics["train_seconds_per_epoch"],
        })
        print(f"fold {i}: val subjects {val_subjects}  accuracy {per_fold[-1]['accuracy']:.4f}  "
              f"macro-F1 {per_fold[-1]['macro_f1']:.4f}", flush=True)

    def spread(key):
        values = np.array([f[key] for f in per_fold])
        return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
                "min": float(values.min()), "max": float(values.max())}

    pooled = classification_report(y_true, y_pred, list(windows.classes))
    summary = {
        "model": config.model,
        "folds": config.folds,
        "seed": config.seed,
        "epochs": config.epochs,
        "train_config": config.to_dict(),
        "accuracy": spread("accuracy"),
        "macro_f1": spread("macro_f1"),
        "train_seconds_per_epoch": spread("train_seconds_per_epoch"),
        "per_fold": per_fold,
        "pooled": pooled,
        "note": "std is the sample standard deviation over folds (ddof=1); pooled = all held-out windows together",
    }
    (out_dir / "cv_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "cv_confusion.txt").write_text(confusion_text(pooled, list(windows.classes)))
    return summary
