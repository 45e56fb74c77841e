"""Accuracy of a mount-aligned cross-validation run under three states of the wearer's calibration.

    python scripts/mount_cv.py runs/cv/bilm_e30_mount runs/cv/bilm_e30_mount_seed1 ...

Each fold's checkpoint is scored on its held-out users' windows (the CV windows) three ways:
- calibrated: each wearer's reference from all of their own moving windows, as `har-train cv` reports
  (a wearer who already has a --mount-calibration file);
- first session: the device's online calibration, started empty on the wearer's first experiment and
  carried into their second, fed every stream window (hop 64 from the stream start, transitions and
  unlabelled stretches included) in time order, exactly as `edge.pipeline.Pipeline` does; a window is
  scored with the calibration as it stood when the window ended (identity before min_windows);
- uncalibrated: no rotation at all.
Labels are used only to score.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from firmware_bridge.recording import HaptSource  # noqa: E402

from edge.frontend import FrontEnd, FrontEndConfig  # noqa: E402
from edge.mount import MountCalibration, MountConfig, align_by_subject, rotate_windows  # noqa: E402

from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import ConfigError  # noqa: E402
from training.cv import fold_checkpoints  # noqa: E402
from training.data import default_hapt_path, normalize  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.metrics import classification_report  # noqa: E402
from training.train import predict  # noqa: E402


def first_session_rotations(source: HaptSource, user: int, held_out, config: MountConfig,
                            frontend: FrontEndConfig) -> np.ndarray:
    """(n, 3, 3): for each of the user's CV windows, the online calibration's rotation when it ended."""
    rotations = np.tile(np.eye(3), (len(held_out), 1, 1))
    calibration = MountCalibration(config)
    for experiment in sorted(set(held_out.experiment.tolist())):
        stream, ends = FrontEnd(frontend).push(np.asarray(source.read_experiment(experiment, user)))  # (k, 128, 9), (k,)
        states = []  # rotation after each stream window
        for window in stream:
            calibration.update(window)
            states.append(calibration.rotation())
        mine = np.flatnonzero(held_out.experiment == experiment)
        for i in mine:
            done = np.flatnonzero(ends <= held_out.start[i] + frontend.window)  # stream windows ended by then
            if len(done):
                rotations[i] = states[done[-1]]
    return rotations


def score_run(run: Path, windows, source: HaptSource) -> dict[str, list[tuple[float, float]]]:
    """Each fold's checkpoint of `run` on its held-out users -> {calibration: [(accuracy, macro-F1) per fold]}."""
    scores: dict[str, list[tuple[float, float]]] = {"calibrated": [], "first session": [], "uncalibrated": []}
    for path in fold_checkpoints(run):
        model, checkpoint = load_checkpoint(path)
        if not checkpoint.get("mount"):
            raise ConfigError(f"{path} was trained without align_mount")
        config = MountConfig.from_dict(checkpoint["mount"])
        frontend = FrontEndConfig.from_dict(checkpoint["frontend"])
        mean, std = (np.asarray(checkpoint["norm"][k], np.float32) for k in ("mean", "std"))
        held_out = windows.of_subjects(checkpoint["subjects"]["val"])
        online = held_out.X.copy()
        for user in checkpoint["subjects"]["val"]:
            mask = held_out.subject == user
            rotations = first_session_rotations(source, user, held_out.select(mask), config, frontend)
            online[mask] = np.stack([rotate_windows(w, r) for w, r in zip(held_out.X[mask], rotations)])
        inputs = {"calibrated": align_by_subject(held_out.X, held_out.subject, config),
                  "first session": online, "uncalibrated": held_out.X}
        line = [f"{run.name}/{path.parent.name}:"]
        for name, X in inputs.items():
            logits = predict(model, torch.from_numpy(normalize(X, mean, std)), batch_size=512)  # (n, 6)
            report = classification_report(held_out.y, logits.argmax(1).numpy(), list(windows.classes))
            scores[name].append((report["accuracy"], report["macro_f1"]))
            line.append(f"{name} {100 * report['accuracy']:.1f}% / {report['macro_f1']:.3f}")
        print("  ".join(line), flush=True)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="`har-train cv` output folders of mount-aligned runs")
    parser.add_argument("--data", default=default_hapt_path())
    options = parser.parse_args()
    torch.set_num_threads(1)
    windows, source = load_dataset(options.data), HaptSource(options.data)
    try:
        per_run = {run.name: score_run(run, windows, source) for run in options.runs}
    except ConfigError as exc:
        raise SystemExit(f"mount_cv: {exc}") from None
    print(f"\n{'run':<24} {'calibration':<14} {'accuracy % (mean ± std, folds)':<32} macro-F1")
    for run_name, scores in per_run.items():
        for name, values in scores.items():
            table = np.asarray(values)  # (folds, 2)
            spread = table.std(axis=0, ddof=1) if len(table) > 1 else np.zeros(2)
            print(f"{run_name:<24} {name:<14} {100 * table[:, 0].mean():.1f} ± {100 * spread[0]:.1f}{'':<20} "
                  f"{table[:, 1].mean():.3f} ± {spread[1]:.3f}")


if __name__ == "__main__":
    main()
