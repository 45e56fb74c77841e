"""Training cost per epoch of every model variant, measured side by side in one process.

    python scripts/bench_train.py [--batches 15] [--threads 1] [--repeats 3]
    python scripts/bench_train.py --settings 1x64,1x256,2x64,1x64l[,1x64c]   # threads x batch [l: channels-last
                                                                              #  convs, c: torch.compile]
    python scripts/bench_train.py --profile tcn_physics                      # where one variant's step goes

Each variant takes `--batches` optimizer steps (batch 64, AdamW, its full training loss: CE plus the
physics head or the VAE/biomechanical terms) on real normalized HAPT windows; variants are measured in
rotation `--repeats` times so background load hits them alike, and the median seconds per step is
scaled to one epoch of a 3-fold CV fold (14 users, about 4,940 windows) and of the 21-user training set
(optimizer steps only: the per-epoch validation pass and data shuffling come on top).
Prints a table; nothing is asserted.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from training.data import default_hapt_path, fit_normalization, normalize  # noqa: E402
from training.datasets import load_dataset  # noqa: E402
from training.models import VARIANTS, create_model, model_summary  # noqa: E402


def conv1d_as_channels_last_2d(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """conv(x) computed as a Conv2d over (B, C, 1, T) in channels-last layout, with conv's own parameters
    (equal to conv(x) to float rounding). Alone, oneDNN's channels-last kernels run the k=21 depthwise
    convolution 2.4x faster than Conv1d (forward + backward); inside the models the whole step gets slower
    (docs/results.md), so training does not use it: it is measured here only."""
    x4 = x.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (B, C, 1, T), stored as (B, 1, T, C)
    weight = conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)  # (C_out, C_in/g, 1, k)
    padding = conv.padding[0]
    assert isinstance(padding, int)  # use_channels_last_convs takes only numeric padding
    y = F.conv2d(x4, weight, conv.bias, (1, conv.stride[0]), (0, padding), (1, conv.dilation[0]),
                 conv.groups)  # (B, C_out, 1, T')
    return y.squeeze(2)  # (B, C_out, T'), channels-last strides: the next conv needs no copy


def use_channels_last_convs(model: torch.nn.Module) -> int:
    """Route every zero-padded Conv1d of `model` through conv1d_as_channels_last_2d; returns how many (the
    state dict is unchanged)."""
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d) and m.padding_mode == "zeros"
             and not isinstance(m.padding, str)]
    for conv in convs:
        conv.forward = functools.partial(conv1d_as_channels_last_2d, conv)  # type: ignore[method-assign]  # per instance, on purpose
    return len(convs)


def time_steps(model, optimizer, X: torch.Tensor, y: torch.Tensor, batches: int, batch_size: int) -> float:
    """Median seconds of one optimizer step over `batches` steps (after one warm-up step)."""
    model.train()
    times = []
    for i in range(batches + 1):
        idx = torch.randint(0, len(X), (batch_size,))
        started = time.perf_counter()
        loss, _ = model.training_loss(X[idx], y[idx])  # X[idx] (B, 128, 9)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if i:  # the first step allocates
            times.append(time.perf_counter() - started)
    return statistics.median(times)


class CompiledLoss:
    """The model with its training loss (forward, loss terms) under torch.compile (inductor, CPU)."""

    def __init__(self, model):
        self.model, self.training_loss = model, torch.compile(model.training_loss)

    def train(self):
        self.model.train()

    def parameters(self):
        return self.model.parameters()


def compare_settings(args, X: torch.Tensor, y: torch.Tensor) -> None:
    """Seconds per 21-user epoch of every variant under each setting THREADSxBATCH[l|c], in rotation."""
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    names = [n for n in VARIANTS if n != "tcn_tiny"]
    runs = {}
    for setting in settings:
        compiled, channels_last = setting.endswith("c"), setting.endswith("l")
        threads, batch = (int(v) for v in setting.rstrip("cl").split("x"))
        for n in names:
            torch.manual_seed(0)
            model = create_model(n)
            if channels_last:
                use_channels_last_convs(model)
            step = CompiledLoss(model) if compiled else model
            optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
            runs[setting, n] = (threads, batch, step, optimizer)
    step_s: dict[tuple[str, str], list[float]] = {key: [] for key in runs}
    for r in range(args.repeats):
        for key, (threads, batch, step, optimizer) in runs.items():
            torch.set_num_threads(threads)
            step_s[key].append(time_steps(step, optimizer, X, y, args.batches, batch))
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print(f"s per 21-user epoch ({len(X)} windows; optimizer steps only), median of {args.repeats} x "
          f"{args.batches} steps, all measured in rotation; setting = threads x batch (l: channels-last convs, "
          "c: torch.compile)")
    print(f"{'variant':<17}" + "".join(f"{s:>10}" for s in settings))
    for n in names:
        cells = []
        for setting in settings:
            batch = runs[setting, n][1]
            cells.append(f"{statistics.median(step_s[setting, n]) * np.ceil(len(X) / batch):>10.1f}")
        print(f"{n:<17}" + "".join(cells))


def profile_steps(name: str, X: torch.Tensor, y: torch.Tensor, batches: int, batch_size: int) -> None:
    """The operators that take one variant's training steps, by self CPU time (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    model = create_model(name)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.01)
    time_steps(model, optimizer, X, y, 2, batch_size)  # warm up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        time_steps(model, optimizer, X, y, batches, batch_size)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--settings", help="compare THREADSxBATCH[l|c] settings side by side, e.g. 1x64,1x64l,2x64")
    parser.add_argument("--profile", metavar="VARIANT", help="print the operators that take this variant's steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    windows = load_dataset(default_hapt_path())
    mean, std = fit_normalization(windows.X)
    X = torch.from_numpy(normalize(windows.X, mean, std).astype(np.float32))  # (N, 128, 9)
    y = torch.from_numpy(windows.y.astype(np.int64))                          # (N,)
    if args.profile:
        profile_steps(args.profile, X, y, args.batches, args.batch_size)
        return
    if args.settings:
        compare_settings(args, X, y)
        return
    names = [n for n in VARIANTS if n != "tcn_tiny"]
    models = {n: create_model(n) for n in names}
    optimizers = {n: torch.optim.AdamW(m.parameters(), lr=5e-4, weight_decay=0.01) for n, m in models.items()}
    step_s: dict[str, list[float]] = {n: [] for n in names}
    for r in range(args.repeats):
        for n in names:
            step_s[n].append(time_steps(models[n], optimizers[n], X, y, args.batches, args.batch_size))
        print(f"round {r + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    fold_steps = int(np.ceil(len(X) * 14 / 21 / args.batch_size))
    all_steps = int(np.ceil(len(X) / args.batch_size))
    print(f"training cost on this machine, {args.threads} thread(s), batch {args.batch_size}, median of "
          f"{args.repeats} x {args.batches} steps per variant, measured in rotation")
    print(f"{'variant':<17}{'params':>9}{'ms/step':>9}{'s/epoch CV fold':>17}{'s/epoch 21 users':>18}")
    for n in names:
        s = statistics.median(step_s[n])
        print(f"{n:<17}{model_summary(models[n])['params']:>9,}{1e3 * s:>9.1f}{s * fold_steps:>17.1f}"
              f"{s * all_steps:>18.1f}")


if __name__ == "__main__":
    main()
