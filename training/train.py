"""The trainer: subject-wise split, train-only normalization, AdamW + warm-up/cosine, per-epoch validation,
best epoch chosen on the validation subjects only, and a report directory.

    result = fit(load_train_config(None, ["epochs=5"]), "runs/demo")

Out dir: model.pt (training/checkpoint.py), metrics.json, confusion.txt, confusion.png, curves.png,
norm.json; while the run is unfinished also training_state.pt (replaced after every epoch: `resume=True`
continues from it, losing at most the epoch that was running).
Any data set kind (training/datasets.py), any class set (`classes`), fine-tuning from a checkpoint (`init`),
CUDA with bfloat16 autocast when present (`device`, `amp`).
With train_all=true there are no validation subjects: the saved weights are those of the LAST epoch
(the EMA weights when ema=true), and metrics.json says so ("selection").
"""
from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from edge.frontend import FrontEndConfig
from edge.mount import MountConfig, align_by_subject, canonical_direction, subject_references

from training.augment import WindowAugmentation
from training.checkpoint import (
    STATE_FILE,
    init_from_checkpoint,
    init_path,
    make_checkpoint,
    read_training_state,
    save_checkpoint,
    save_training_state,
)
from training.config import ConfigError, TrainConfig
from training.data import WindowSet, fit_normalization, normalize, subject_folds
from training.datasets import CLASSES, load_dataset_hops
from training.metrics import classification_report, confusion_text, plot_confusion, plot_curves
from training.models import create_model, model_summary


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def split_subjects(config: TrainConfig, subjects) -> tuple[list[int], list[int]]:
    """(train, val) subject ids: train_all -> (all, []); explicit val_subjects; else fold val_fold of folds."""
    present = sorted({int(s) for s in subjects})
    if config.train_all:
        return present, []
    if config.val_subjects:
        absent = sorted(set(config.val_subjects) - set(present))
        if absent:
            raise ConfigError(f"val_subjects {absent} have no windows in the data (subjects present: {present})")
        val = sorted(set(config.val_subjects))
        train = [s for s in present if s not in val]
    else:
        train, val = subject_folds(present, config.folds, config.seed)[config.val_fold]
    if not train:
        raise ConfigError(f"no training subjects left after holding out {val}: add subjects or set fewer val_subjects")
    return list(train), list(val)


def lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up to 1 over warmup_steps, then cosine decay to 0 at total_steps."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def resolve_device(name: str) -> torch.device:
    """auto -> cuda when torch sees a GPU, else cpu; cuda without one is a ConfigError."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                          "use device=auto or device=cpu")
    return torch.device("cuda" if name in ("auto", "cuda") and torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict(model, X: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits (N, n_classes) on the CPU of normalized windows X (N, 128, 9), in eval mode, on the model's device."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out = torch.cat([model(X[i:i + batch_size].to(device)).float().cpu()
                     for i in range(0, len(X), batch_size)])  # (N, n_classes)
    model.train(was_training)
    return out


def evaluate(model, X: torch.Tensor, y: torch.Tensor, classes, batch_size: int) -> dict:
    logits = predict(model, X, batch_size)  # (N, n_classes)
    report = classification_report(y.numpy(), logits.argmax(1).numpy(), classes)
    report["loss"] = float(F.cross_entropy(logits, y))
    return report


def fit_mount(references: dict[int, np.ndarray], train_subjects) -> MountConfig:
    """The mount of a model trained on `train_subjects`: canonical = the mean of their references."""
    mine = [references[s] for s in train_subjects if s in references]
    if not mine:
        raise ConfigError("align_mount: no training window is moving (walking); train on recordings with walking "
                          "or set align_mount=false")
    return MountConfig(canonical=canonical_direction(mine))


def load_windows(config: TrainConfig) -> tuple[WindowSet, WindowSet]:
    """-> (windows at the front-end's hop, as the device cuts them: validation; windows at `train_hop`: training).
    One front-end pass per recording makes both; only the spacing of window starts differs.
    transitions=true adds the postural-transition windows to training (training/transitions.py)."""
    device_hop = FrontEndConfig().hop
    by_hop = load_dataset_hops(config.data_path(), sorted({device_hop, config.train_hop}), FrontEndConfig(),
                               classes=tuple(config.classes), subjects=config.subjects or None)
    device_windows, train_windows = by_hop[device_hop], by_hop[config.train_hop]
    if config.transitions:  # the postural-transition windows join training only (training/transitions.py)
        from training.transitions import with_transitions

        device_windows, train_windows = with_transitions(device_windows, train_windows, config.data_path(),
                                                         config.subjects or None)
    return device_windows, train_windows


# What `fit` writes into its out_dir (`har-train fit --force` deletes these before a new run).
RUN_FILES = ("model.pt", "metrics.json", "norm.json", "confusion.txt", "confusion.png", "curves.png", STATE_FILE)


def check_class_coverage(windows: WindowSet, where) -> None:
    """Every class of the set needs training windows: a class without any could never be learnt."""
    counts = np.bincount(windows.y, minlength=len(windows.classes))
    present = [c for c, n in zip(windows.classes, counts) if n > 0]
    if len(present) < 2:  # it would "learn" to say one thing, and score 100% on data of that one class
        raise ConfigError(f"{where} have windows of {len(present)} class(es) only ({', '.join(present) or 'none'}); "
                          "a classifier needs at least two: add recordings of other activities")
    empty = [c for c, n in zip(windows.classes, counts) if n == 0]
    if empty:
        raise ConfigError(f"class(es) {empty} have no training windows in {where}; label some data with them "
                          f"or leave them out of `classes` (windows per class: "
                          f"{dict(zip(windows.classes, counts.tolist()))})")


def fit(config: TrainConfig, out_dir: str | Path, windows: WindowSet | None = None,
        train_windows: WindowSet | None = None, resume: bool = False, epoch_done=None,
        say=print) -> dict:
    """Train one model per `config`, write the report into out_dir, return metrics.json's content.
    `windows` (device hop) and `train_windows` (train_hop; default `windows`), un-normalized, may be given to
    skip loading the data (cross-validation loads once). resume=True continues out_dir's unfinished run from its
    training_state.pt; `epoch_done(epoch)` is called after each epoch's state is saved; `say` prints notes."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.num_threads)
    set_seed(config.seed)
    device = resolve_device(config.device)
    state = read_training_state(out_dir) if resume else None
    if state is not None:
        check_resumable(config, state["train_config"], out_dir)

    if windows is None:
        windows, train_windows = load_windows(config)
    elif config.subjects:
        windows = windows.of_subjects(config.subjects)
    if train_windows is None:
        train_windows = windows
    classes = list(windows.classes)
    if not config.classes and tuple(classes) != CLASSES:
        # Own recordings' labels are the classes: a typo in one (WALKNG) would be a class of its own, unseen.
        say(f"classes, from the data's labels (not the standard six; fix them with --set classes=[...] or "
            f"relabel): {', '.join(classes)}")
    train_subjects, val_subjects = split_subjects(config, windows.subject)
    train_set = train_windows.of_subjects(train_subjects)
    val_set = windows.of_subjects(val_subjects) if val_subjects else None
    check_class_coverage(train_set, f"the training subjects {train_subjects}")

    init = None
    if config.init:  # fine-tuning: the checkpoint's architecture, weights, normalization and mount
        model, init, message = init_from_checkpoint(init_path(config.init), classes)
        if config.model != init["model_name"]:
            message += f" (its architecture {init['model_name']!r}, not model={config.model!r})"
        say(message)
    else:
        model = create_model(config.model, **config.model_overrides(), n_classes=len(classes))
    model_name = init["model_name"] if init is not None else config.model

    mount = None
    unaligned_train = None
    if config.align_mount:
        # Each wearer rotated by their own moving-window reference (no labels used), onto the training wearers'
        # mean; validation wearers count as calibrated (edge/mount.py: the device calibrates while worn).
        # One reference per wearer, from their windows at the device's hop whatever train_hop cuts.
        references = subject_references(windows.X, windows.subject, MountConfig(canonical=(1.0, 0.0, 0.0)))
        mount = (MountConfig.from_dict(init["mount"], "checkpoint mount") if init is not None and init.get("mount")
                 else fit_mount(references, train_subjects))
        unaligned_train = train_set.X  # (N, 128, 9): what the device feeds before its calibration
        train_set = replace(train_set, X=align_by_subject(train_set.X, train_set.subject, mount, references))
        if val_set is not None:
            val_set = replace(val_set, X=align_by_subject(val_set.X, val_set.subject, mount, references))

    # Statistics from the training subjects only (fine-tuning keeps the checkpoint's: its weights expect them).
    if init is not None:
        mean, std = (np.asarray(init["norm"][k], np.float32) for k in ("mean", "std"))
    else:
        mean, std = fit_normalization(train_set.X)
    X_train = torch.from_numpy(normalize(train_set.X, mean, std))  # (N, 128, 9)
    y_train = torch.from_numpy(train_set.y)  # (N,)
    X_unaligned = None
    if unaligned_train is not None and config.mount_unaligned_fraction > 0:
        X_unaligned = torch.from_numpy(normalize(unaligned_train, mean, std))  # (N, 128, 9)
    if val_set is not None:
        X_val = torch.from_numpy(normalize(val_set.X, mean, std))  # (M, 128, 9)
        y_val = torch.from_numpy(val_set.y)  # (M,)

    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches_per_epoch = math.ceil(len(X_train) / config.batch_size)
    if config.max_batches_per_epoch:
        batches_per_epoch = min(batches_per_epoch, config.max_batches_per_epoch)
    total_steps = batches_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config.warmup_epochs * batches_per_epoch, total_steps))
    ema = (AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
           if config.ema else None)
    evaluated = lambda: ema.module if ema is not None else model  # noqa: E731  the weights we judge and save
    # bfloat16 autocast on CUDA: no loss scaling needed (bf16 has fp32's exponent range).
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda" and config.amp)
    torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed window shapes: let cuDNN pick its kernels

    generator = torch.Generator().manual_seed(config.seed)
    augment = WindowAugmentation(mean, std, config.seed, max_degrees=config.rotate_degrees,
                                 intensity=config.intensity_scale)
    history: list[dict] = []
    best: dict[str, Any] = {"score": -1.0, "epoch": 0, "state": None}
    first_epoch = 1
    if state is not None:  # everything the next epoch depends on, as it was after the saved one
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        generator.set_state(state["generator"])
        augment.generator.set_state(state["augment_generator"])
        torch.set_rng_state(state["torch_rng"])
        history, best, first_epoch = state["history"], state["best"], state["epoch"] + 1
        say(f"resuming {out_dir} after epoch {state['epoch']} of {config.epochs}")
    for epoch in range(first_epoch, config.epochs + 1):
        model.train()
        order = torch.randperm(len(X_train), generator=generator)[: batches_per_epoch * config.batch_size]
        sums: dict[str, float] = {}
        seen = 0
        started = time.perf_counter()
        bar = tqdm(range(batches_per_epoch), desc=f"epoch {epoch}/{config.epochs}", leave=False,
                   disable=not config.progress, unit="batch")
        for b in bar:
            idx = order[b * config.batch_size:(b + 1) * config.batch_size]
            xb, yb = X_train[idx], y_train[idx]  # (b, 128, 9), (b,)
            if X_unaligned is not None:  # some windows as an uncalibrated device sees them
                raw = torch.rand(len(idx), generator=generator) < config.mount_unaligned_fraction  # (b,)
                xb = torch.where(raw[:, None, None], X_unaligned[idx], xb)  # (b, 128, 9)
            if augment.active:
                xb = augment(xb)  # (b, 128, 9) the same movements, other mounting angle or vigour
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            with autocast:
                loss, parts = model.training_loss(xb, yb)  # type: ignore[operator]  # every registry model has it (torch types attributes Tensor | Module)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            for k, v in {"loss": loss.detach(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
            seen += len(idx)
            if b % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}")
        train_seconds = time.perf_counter() - started
        # Train accuracy: eval-mode predictions on up to 2048 of this epoch's windows (indicative, cheap).
        sample = order[: min(len(order), 2048)]
        correct = int((predict(model, X_train[sample], config.eval_batch_size).argmax(1) == y_train[sample]).sum())
        record = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_seconds": train_seconds,
                  "train_loss": sums["loss"] / seen, "train_accuracy": correct / len(sample),
                  **{f"train_{k}": v / seen for k, v in sums.items() if k != "loss"}}
        if val_set is not None:
            report = evaluate(evaluated(), X_val, y_val, classes, config.eval_batch_size)
            record.update(val_loss=report["loss"], val_accuracy=report["accuracy"], val_macro_f1=report["macro_f1"])
            if config.select_epoch == "best" and report["macro_f1"] > best["score"]:  # chosen on the val users
                best = {"score": report["macro_f1"], "epoch": epoch,
                        "state": {k: v.detach().cpu().clone() for k, v in evaluated().state_dict().items()}}
        history.append(record)
        message = (f"epoch {epoch}/{config.epochs}  loss {record['train_loss']:.4f}  "
                   f"{train_seconds:.1f}s")
        if val_set is not None:
            message += f"  val acc {record['val_accuracy']:.4f}  val macro-F1 {record['val_macro_f1']:.4f}"
        if config.progress:
            tqdm.write(message)
        save_training_state(out_dir, {
            "epoch": epoch, "train_config": config.to_dict(), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "ema": ema.state_dict() if ema is not None else None, "generator": generator.get_state(),
            "augment_generator": augment.generator.get_state(), "torch_rng": torch.get_rng_state(),
            "history": history, "best": best})
        if epoch_done is not None:
            epoch_done(epoch)

    final = copy.deepcopy(evaluated()).cpu()
    if val_set is not None and config.select_epoch == "best":
        final.load_state_dict(best["state"])
        selection = (f"best validation macro-F1 at epoch {best['epoch']} of {config.epochs}"
                     + (" (EMA weights)" if ema is not None else "") + ": chosen on the validation users")
    elif val_set is not None:
        selection = (f"select_epoch=last: the {'EMA' if ema is not None else 'last-epoch'} weights after epoch "
                     f"{config.epochs}; the validation users only score, they choose nothing")
    else:
        selection = (f"train_all: no validation subjects; the {'EMA' if ema is not None else 'last-epoch'} "
                     f"weights after epoch {config.epochs} are saved, chosen by no held-out score")
    final.eval()

    metrics = {
        "model": model_name,
        "selection": selection,
        "best_epoch": best["epoch"] if val_set is not None and config.select_epoch == "best" else config.epochs,
        "classes": classes,
        "init": str(init_path(config.init)) if init is not None else None,
        "device": str(device),
        "train_subjects": train_subjects,
        "val_subjects": val_subjects,
        "n_train_windows": len(train_set),
        "n_val_windows": len(val_set) if val_set is not None else 0,
        "train_seconds_per_epoch": float(np.mean([h["train_seconds"] for h in history])),
        "num_threads": config.num_threads,
        "summary": model_summary(final),
        "history": history,
    }
    if val_set is not None:
        report = evaluate(final, X_val, y_val, classes, config.eval_batch_size)
        metrics["val"] = report
        (out_dir / "confusion.txt").write_text(confusion_text(report, classes))
        plot_confusion(report, classes, out_dir / "confusion.png",
                       title=f"{model_name}, val subjects {val_subjects}\n"
                             f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}")
    plot_curves(history, out_dir / "curves.png")

    frontend = asdict(FrontEndConfig())  # the front-end that made the windows (load_dataset's default)
    checkpoint = make_checkpoint(
        final, model_name=model_name, train_config=config.to_dict(), classes=classes,
        channels=list(windows.channels), mean=mean, std=std, frontend=frontend,
        metrics={k: v for k, v in metrics.items() if k != "history"},
        train_subjects=train_subjects, val_subjects=val_subjects,
        mount=mount.to_dict() if mount is not None else None)
    save_checkpoint(out_dir / "model.pt", checkpoint)
    (out_dir / "norm.json").write_text(json.dumps(
        {"channels": list(windows.channels), "mean": checkpoint["norm"]["mean"], "std": checkpoint["norm"]["std"],
         "fit_on_subjects": train_subjects}, indent=2) + "\n")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out_dir / STATE_FILE).unlink()  # finished: nothing left to resume
    return metrics


# Keys that may differ between an interrupted run and its resumption: how it runs, not what it computes.
RESUME_MAY_DIFFER = ("progress", "num_threads", "eval_batch_size", "device", "amp")


def check_resumable(config: TrainConfig, saved: dict, out_dir: Path) -> None:
    changed = sorted(k for k, v in config.to_dict().items() if k not in RESUME_MAY_DIFFER and saved.get(k) != v)
    if changed:
        raise ConfigError(f"--resume: {out_dir} was started with other settings for {changed} "
                          f"(then: {[saved.get(k) for k in changed]}); resume with the same config and --set lines, "
                          "or start a new --out")
