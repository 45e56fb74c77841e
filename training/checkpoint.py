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
    with open(path, "rb") as file:
        head = file.read(4)
    if not head.startswith(b"PK") and head[:1] != b"\x80":  # torch.save writes a zip (older ones a pickle)
        raise CheckpointError(f"{path} is not a torch checkpoint (its first bytes {head!r} are neither the zip "
                              "archive torch.save writes nor a pickle); give the model.pt that `har-train fit` wrote")
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
    model.eval()
    return model, ckpt


# ----------------------------------------------------------------------------------------------
# Fine-tuning: a checkpoint's weights under another (or the same) class set

# The shipped model's checkpoint, beside its bundle (docs/training.md "Fine-tuning"); `--init default` names it.
SHIPPED_CHECKPOINT = Path(__file__).resolve().parent.parent / "edge" / "models" / "default" / "model.pt"


def init_path(name: str) -> Path:
    """`--init` argument -> checkpoint path ("default" = the shipped model's checkpoint)."""
    if name != "default":
        return Path(name)
    if not SHIPPED_CHECKPOINT.exists():
        raise CheckpointError(f"--init default: the shipped checkpoint {SHIPPED_CHECKPOINT} is not in this "
                              "checkout; give a model.pt written by `har-train fit` instead")
    return SHIPPED_CHECKPOINT


def head_keys(model_config: dict) -> list[str]:
    """State-dict keys whose shape follows n_classes (the classification head), found by building the
    architecture with two class counts: whatever changes shape is the head, for every architecture."""
    a = build_model({**model_config, "n_classes": 2}).state_dict()
    b = build_model({**model_config, "n_classes": 3}).state_dict()
    return [k for k in a if a[k].shape != b[k].shape]


def init_from_checkpoint(path: str | Path, classes) -> tuple[torch.nn.Module, dict, str]:
    """-> (model with the checkpoint's weights for `classes`, checkpoint, what was done, in words).

    Same classes in the same order: every weight is kept. Otherwise the head is replaced: its rows for
    classes the checkpoint knows are copied (in the new order), the others newly initialized."""
    ckpt = read_checkpoint(path)
    classes, old = list(classes), list(ckpt["classes"])
    config = {**ckpt["model_config"], "n_classes": len(classes)}
    try:
        model = build_model(config)
    except (ModelConfigError, TypeError) as exc:
        raise CheckpointError(f"checkpoint {path}: its model_config cannot build a model: {exc}") from None
    state = dict(ckpt["state_dict"])
    if classes == old:
        message = f"fine-tuning {ckpt['model_name']} from {path}: same classes, every weight kept"
    else:
        fresh = model.state_dict()
        kept = [c for c in classes if c in old]
        for key in head_keys(ckpt["model_config"]):
            head = fresh[key].clone()  # (n_new, ...) newly initialized rows
            for i, name in enumerate(classes):
                if name in old:
                    head[i] = state[key][old.index(name)]
            state[key] = head
        added = [c for c in classes if c not in old]
        dropped = [c for c in old if c not in classes]
        message = (f"fine-tuning {ckpt['model_name']} from {path}: the class set changed from {old} to {classes}; "
                   f"the classification head is replaced (rows of {len(kept)} known classes copied"
                   + (f", new: {added}" if added else "") + (f", dropped: {dropped}" if dropped else "")
                   + "), every other weight kept")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"checkpoint {path}: weights do not fit model {ckpt['model_name']!r}: "
                              f"{str(exc).splitlines()[0]}") from None
    return model, ckpt, message


# ----------------------------------------------------------------------------------------------
# The training state of an unfinished run (`har-train fit --resume`)

STATE_FILE = "training_state.pt"
STATE_FORMAT = "har-training-state/1"


def save_training_state(out_dir: str | Path, state: dict) -> Path:
    """OUT/training_state.pt, replaced atomically after every epoch (a kill mid-write leaves the last one)."""
    return save_checkpoint(Path(out_dir) / STATE_FILE, {"format": STATE_FORMAT, **state})


def read_training_state(out_dir: str | Path) -> dict:
    path = Path(out_dir) / STATE_FILE
    if not path.exists():
        done = " (the run finished: model.pt is there)" if (Path(out_dir) / "model.pt").exists() else ""
        raise CheckpointError(f"--resume: {path} does not exist{done}; start the run without --resume")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: many exception types, as for read_checkpoint
        raise CheckpointError(f"--resume: {path} is not a readable training state ({type(exc).__name__}); "
                              "delete it and start again") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"--resume: {path} is not a {STATE_FORMAT} file")
    return state
