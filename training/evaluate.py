"""`har-train evaluate MODEL --data PATH`: score a checkpoint or a bundle (any backend and precision) on
any data set kind: accuracy, macro-F1, per-class recall, confusion matrix (text and PNG), JSON.

The windows are made with the model's own front-end (continuous recordings) or used as given (UCI-HAR),
mount-aligned per wearer when the model was trained so (each wearer counts as calibrated, as in training's
validation), normalized with the model's statistics. Labels are matched to the model's classes by name: a
label of one's own recordings that the model does not know is an error; HAPT activities it does not know
(the postural transitions for the six-class model) are left out, as in training.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.frontend import FrontEndConfig
from edge.mount import MountConfig, align_by_subject

from training.data import DataError, normalize
from training.datasets import dataset_kind, load_dataset
from training.metrics import classification_report, confusion_text, plot_confusion


def _is_bundle(path: Path) -> bool:
    return path.is_dir() and (path / "bundle.json").is_file()


def load_scorer(model_path: str | Path, backend: str, precision: str, threads: int = 1):
    """-> (classes, FrontEndConfig, MountConfig or None, mean, std, logits(windows (k,128,9)) -> (k, n), words)."""
    model_path = Path(model_path)
    if _is_bundle(model_path):
        from edge.bundle import load_bundle
        from edge.inference import create_session

        bundle = load_bundle(model_path)
        session = create_session(bundle, backend=backend, precision=precision, num_threads=threads)
        return (tuple(bundle.classes), bundle.frontend_config, bundle.mount, bundle.mean, bundle.std,
                session.predict, f"bundle {model_path} ({session.describe()})")
    if model_path.is_dir():
        raise DataError(f"{model_path}: neither a bundle (no bundle.json) nor a checkpoint file; give a bundle "
                        "directory written by har-export or a model.pt written by har-train fit")
    import torch

    from training.checkpoint import load_checkpoint
    from training.train import predict

    model, ckpt = load_checkpoint(model_path)
    mount = MountConfig.from_dict(ckpt["mount"], "checkpoint mount") if ckpt.get("mount") else None

    def logits(windows: np.ndarray) -> np.ndarray:
        return predict(model, torch.from_numpy(np.ascontiguousarray(windows)), 512).numpy()  # (k, n_classes)

    return (tuple(ckpt["classes"]), FrontEndConfig.from_dict(ckpt["frontend"]), mount,
            np.asarray(ckpt["norm"]["mean"], np.float32), np.asarray(ckpt["norm"]["std"], np.float32), logits,
            f"checkpoint {model_path} ({ckpt['model_name']}, torch fp32)")


def evaluate_model(model_path: str | Path, data: str | Path, *, split: str = "train", subjects=None,
                   backend: str = "tflite", precision: str = "int8", threads: int = 1) -> dict:
    """The report dict (the JSON of --json): accuracy, macro_f1, windows, per_class, confusion, classes ..."""
    classes, frontend, mount, mean, std, logits, description = load_scorer(model_path, backend, precision, threads)
    windows = load_dataset(data, frontend, classes=classes, subjects=subjects, split=split)
    X = windows.X  # (N, 128, 9) un-normalized
    if mount is not None:
        X = align_by_subject(X, windows.subject, mount)
    scores = logits(normalize(X, mean, std))  # (N, n_classes)
    report = classification_report(windows.y, scores.argmax(1), list(classes))
    return {
        "model": description, "data": str(data), "kind": dataset_kind(data), "split": split,
        "subjects": sorted(int(s) for s in np.unique(windows.subject)),
        "classes": list(classes), "windows": report.pop("n_windows"), **report,
        "mount_aligned": mount is not None,
    }


def summary_text(report: dict) -> str:
    lines = [f"{report['model']} on {report['data']} ({report['kind']}, split {report['split']}, "
             f"{report['windows']} windows, subjects {report['subjects']})",
             f"accuracy {report['accuracy']:.4f}   macro-F1 {report['macro_f1']:.4f}",
             "per-class recall: " + ", ".join(f"{c} {v['recall']:.3f} ({v['support']})"
                                              for c, v in report["per_class"].items()), ""]
    return "\n".join(lines) + confusion_text({**report, "n_windows": report["windows"]}, report["classes"])


def write_outputs(report: dict, json_path: str | Path | None, png_path: str | Path | None) -> None:
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(report, indent=2) + "\n")
        tmp.replace(path)
    if png_path:
        Path(png_path).parent.mkdir(parents=True, exist_ok=True)
        plot_confusion(report, report["classes"], png_path,
                       title=f"{Path(report['data']).name} ({report['split']}): accuracy {report['accuracy']:.4f}, "
                             f"macro-F1 {report['macro_f1']:.4f}")
