"""`har-edge bench` with the torch eager fp32 baseline of the same model, side by side in one run.

    python scripts/bench_torch.py --torch-checkpoint runs/ship/model.pt [har-edge bench options]

The edge package never imports torch; this script (a training-side tool) times the checkpoint's
torch model on the very windows the edge engines are timed on, and adds `torch` and
`speedup_vs_torch` to the figures. Figures only; nothing here asserts a time.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.bench import format_table, run_bench, time_per_window  # noqa: E402
from edge.cli import build_parser  # noqa: E402
from edge.timing import stats_ms  # noqa: E402


def torch_rows(checkpoint: str, threads: int):
    """-> extra_engines for run_bench: torch eager fp32 of the checkpoint's model (unfused, as trained)."""
    import torch

    from training.checkpoint import load_checkpoint

    def rows(x, inference: dict) -> dict:
        torch.set_num_threads(threads)
        model, ckpt = load_checkpoint(checkpoint)
        model.eval()
        with torch.inference_mode():
            times = time_per_window(lambda w: model(torch.from_numpy(w)), x)
        row = {"engine": f"torch {torch.__version__} eager fp32", "model": ckpt.get("model_name"), **stats_ms(times)}
        return {"torch": row, "speedup_vs_torch": {key: row["median_ms"] / r["median_ms"]
                                                   for key, r in inference.items() if "median_ms" in r}}
    return rows


def main(argv: list[str] | None = None) -> int:
    own = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    own.add_argument("--torch-checkpoint", required=True, metavar="PATH", help="training checkpoint (model.pt)")
    known, rest = own.parse_known_args(argv)
    args = build_parser().parse_args(["bench", *rest])
    figures = run_bench(args, progress=lambda m: print(f"bench: {m}", file=sys.stderr, flush=True),
                        extra_engines=torch_rows(known.torch_checkpoint, args.threads))
    print(json.dumps(figures, indent=2) if args.json else format_table(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
