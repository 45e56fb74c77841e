"""What bounds `har-edge replay` of a long recording here: numpy's CSV parser on one and on two threads, and
whether the shipped TFLite model runs a batch of windows (a batched replay's precondition).

    python scripts/replay_floor.py RECORDING.csv

Figures only (docs/results.md, "Lean runtime"); the 2-hour file is bench_runtime.py's tiled recording.
"""
from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge.paths import DEFAULT_BUNDLE  # noqa: E402
from edge.replay import _ROW  # noqa: E402  (the replay's own row layout)


def parse(lines: list[str]) -> np.ndarray:
    return np.loadtxt(lines, delimiter=",", dtype=_ROW, usecols=range(8), comments=None, ndmin=1)


def best_of(n: int, work) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        work()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    lines = Path(sys.argv[1]).read_text().splitlines()[1:]
    half = len(lines) // 2
    one = best_of(3, lambda: parse(lines))
    with ThreadPoolExecutor(2) as pool:
        two = best_of(3, lambda: list(pool.map(parse, [lines[:half], lines[half:]])))
    print(f"np.loadtxt of {len(lines)} rows: one thread {one:.3f} s, two threads on its halves {two:.3f} s "
          f"(ratio {one / two:.2f}: 1.0 means the parser holds the GIL)")
    from ai_edge_litert.interpreter import Interpreter

    for path in sorted(DEFAULT_BUNDLE.glob("*.tflite")):
        interpreter = Interpreter(model_path=str(path), num_threads=1)
        index = interpreter.get_input_details()[0]["index"]
        try:
            interpreter.resize_tensor_input(index, [64, 128, 9])
            interpreter.allocate_tensors()
            print(f"{path.name}: runs a batch of 64 windows")
        except RuntimeError as exc:
            print(f"{path.name}: no batch of 64 ({str(exc).splitlines()[0]})")


if __name__ == "__main__":
    main()
