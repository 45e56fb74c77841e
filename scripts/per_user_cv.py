"""Per-user accuracy of a cross-validation run: each fold's checkpoint on its own held-out users.

    python scripts/per_user_cv.py runs/cv/bilm_e30

Prints, per held-out user, window accuracy and the SITTING/STANDING mix-ups (the main error of every
variant), so whole-user biases show apart from errors spread over everyone.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.checkpoint import load_checkpoint  # noqa: E402
from training.config import ConfigError  # noqa: E402
from training.cv import fold_checkpoints  # noqa: E402
from training.data import checkpoint_inputs, default_hapt_path  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.train import predict  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a `har-train cv` output folder (with fold_K/model.pt)")
    parser.add_argument("--data", default=default_hapt_path())
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        folds = fold_checkpoints(args.run)
    except ConfigError as exc:
        raise SystemExit(f"per_user_cv: {exc}") from None
    windows = load_dataset(args.data)
    sitting, standing = windows.classes.index("SITTING"), windows.classes.index("STANDING")
    print(f"{'fold':>4} {'user':>4} {'windows':>7} {'accuracy':>8}  sitting->standing  standing->sitting")
    for path in folds:
        model, checkpoint = load_checkpoint(path)
        for user in checkpoint["subjects"]["val"]:
            held_out = windows.of_subjects([user])
            logits = predict(model, torch.from_numpy(checkpoint_inputs(held_out, checkpoint)), batch_size=512)  # (n, 6)
            predicted = logits.argmax(1).numpy()  # (n,)
            truth = held_out.y
            print(f"{path.parent.name[5:]:>4} {user:>4} {len(truth):>7} {np.mean(predicted == truth):>8.3f}  "
                  f"{int(np.sum(predicted[truth == sitting] == standing)):>7} of {int(np.sum(truth == sitting)):<4}"
                  f"    {int(np.sum(predicted[truth == standing] == sitting)):>7} of {int(np.sum(truth == standing)):<4}")


if __name__ == "__main__":
    main()
