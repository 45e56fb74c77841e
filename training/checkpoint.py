"""The checkpoint file `model.pt`: `torch.save` of plain types and tensors only, so that it loads with
`torch.load(weights_only=True)` (no pickled classes, nothing executed on load). Layout (docs/ARCHITECTURE.md):

    {"format": "har-checkpoint/1", "model_name", "model_config" (ModelConfig as dict), "state_dict",
     "train_config" (TrainConfig as dict), "classes", "channels", "norm": {"mean": [9], "std": [9]},
     "frontend" (FrontEndConfig as dict), "metrics", "subjects": {"train": [...], "val": [...]},
     "mount" (edge.mount.MountConfig as dict, or None: windows are not mount-aligned; absent in older files)}
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch

from training.models import ModelConfigError, build_model

FORMAT = "har-checkpoint/1"
REQUIRED_KEYS = ("format", "model_name", "model_config", "state_dict", "train_config", "classes", "channels",
                 "norm", "frontend", "metrics", "subjects")


class CheckpointError(ValueError):
    """A checkpoint file that is missing, corrupt or not a har checkpoint; the message names the file."""


def make_checkpoint(model, *, model_name: str, train_config: dict, classes, channels, mean, std,
                    frontend: dict, metrics: dict, train_subjects, val_subjects, mount: dict | None = None) -> dict:
    return {
        "format": FORMAT,
        "model_name": model_name,
        "model_config": model.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "train_config": dict(train_config),
        "classes": list(classes),
        "channels": list(channels),
        "norm": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]},
        "frontend": dict(frontend),
        "metrics": metrics,
        "subjects": {"train": [int(s) for s in train_subjects], "val": [int(s) for s in val_subjects]},
        "mount": dict(mount) if mount is not None else None,
    }


def save_checkpoint(path: str | Path, checkpoint: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(checkpoint, tmp)
    tmp.replace(path)  # never leave a half-written model.pt behind
    return path


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict, checked for format and keys (weights_only=True: plain types and tensors only)."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist (train one with `har-train fit --out DIR`)")
    if path.is_dir():
        hint = " (did you mean " + str(path / "model.pt") + "?)" if (path / "model.pt").exists() else ""
        raise CheckpointError(f"checkpoint {path} is a directory, not a model.pt file{hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"checkpoint {path} holds objects other than plain types and tensors and is "
                              f"refused by torch.load(weights_only=True): {str(exc).splitlines()[0]}") from None
    except Exception as exc:  # torch raises many types for a damaged file (RuntimeError, EOFError, IndexError...)
        raise CheckpointError(f"checkpoint {path} is not a readable torch file (truncated or corrupt?): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"checkpoint {path} is not a {FORMAT} file (format: {found!r}); "
                              "it must be written by `har-train fit`")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks key(s) {missing}; re-train it with `har-train fit`")
    return ckpt


def load_checkpoint(path: str | Path):
    """-> (model in eval mode with the checkpoint's weights, checkpoint dict)."""
    ckpt = read_checkpoint(path)
    try:
        model = build_model(ckpt["model_config"])
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: its model_config cannot build a model: {exc}") from None
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model {ckpt['model_name']!r}: "
                              f"{str(exc).splitlines()[0]}") from None
    model.variant_name = ckpt["model_name"]
    model.eval()
    return model, ckpt
