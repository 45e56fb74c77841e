"""Classification metrics (numpy only) and the report figures (matplotlib, Agg backend).

classification_report(y_true, y_pred, classes) -> {"accuracy", "macro_f1", "per_class": {name: {...}},
"confusion": [[...]]} with confusion[i][j] = windows of true class i predicted as class j.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def confusion_matrix(y_true, y_pred, n_classes: int) -> np.ndarray:
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * n_classes + y_pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)  # (true, predicted)


def classification_report(y_true, y_pred, classes) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support. A class with no predictions (or no
    windows) gets precision (recall) 0, as sklearn's zero_division=0 does."""
    n = len(classes)
    cm = confusion_matrix(y_true, y_pred, n)
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    total = cm.sum()
    present = support > 0  # macro over the classes present in y_true
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "n_windows": int(total),
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(classes)
        },
        "confusion": cm.tolist(),
    }


def confusion_text(report: dict, classes) -> str:
    """The confusion matrix and per-class figures as a fixed-width text table."""
    cm = np.asarray(report["confusion"])
    short = [c[:10] for c in classes]
    width = max(10, max(len(s) for s in short)) + 1
    lines = ["rows: true class, columns: predicted class",
             "".ljust(width) + "".join(s.rjust(width) for s in short) + "  recall".rjust(9)]
    for i, name in enumerate(short):
        recall = report["per_class"][classes[i]]["recall"]
        lines.append(name.ljust(width) + "".join(str(v).rjust(width) for v in cm[i]) + f"{recall:9.3f}")
    precision = [report["per_class"][c]["precision"] for c in classes]
    lines.append("precision".ljust(width) + "".join(f"{p:.3f}".rjust(width) for p in precision))
    lines.append(f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}   "
                 f"windows {report['n_windows']}")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only; no display on a training box
    import matplotlib.pyplot as plt
    return plt


def plot_confusion(report: dict, classes, path: str | Path, title: str = "") -> None:
    plt = _pyplot()
    cm = np.asarray(report["confusion"], dtype=np.float64)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)  # recall-normalized rows
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, f"{int(cm[i, j])}\n{rows[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rows[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(classes)), [c.replace("_", "\n") for c in classes], fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(history: list[dict], path: str | Path) -> None:
    """Training loss, validation loss and validation accuracy / macro-F1 per epoch."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_score) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="train loss (total)")
    if any("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h.get("val_loss", np.nan) for h in history], label="val cross-entropy")
    ax_loss.set_xlabel("epoch")
    ax_loss.legend()
    ax_score.plot(epochs, [h["train_accuracy"] for h in history], label="train accuracy")
    if any("val_accuracy" in h for h in history):
        ax_score.plot(epochs, [h.get("val_accuracy", np.nan) for h in history], label="val accuracy")
        ax_score.plot(epochs, [h.get("val_macro_f1", np.nan) for h in history], label="val macro-F1")
    ax_score.set_xlabel("epoch")
    ax_score.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
