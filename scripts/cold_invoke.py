"""How much slower the shipped model's predict runs after the process has slept, and what brings it back.

    python scripts/cold_invoke.py [--precision int8] [--repeats 15]

A live `har-edge run` sleeps about 1.28 s between two windows. This prints the median time of one
`session.predict` on a (1, 128, 9) window
- after sleeping for 0 .. 1.28 s (how fast the caches go cold),
- after sleeping 0.3 s and then busy-waiting (spinning) for a while (is it the CPU's clock or its caches?),
- after sleeping 0.3 s, one throwaway predict, then spinning or sleeping a while (does a rehearsal keep?).
The figures are the reason for the prewarm of edge/sources.py and `Pipeline.rehearsal`
(docs/results.md, "Seventh pass").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.model import load_model  # noqa: E402  (after the path: runs from a checkout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--precision", default="int8", choices=["int8", "fp32"])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    session = load_model(precision=args.precision).session
    window = np.random.default_rng(0).standard_normal((1, 128, 9)).astype(np.float32)  # (1, 128, 9)

    def predict_us() -> float:
        started = time.perf_counter()
        session.predict(window)
        return 1e6 * (time.perf_counter() - started)

    def spin(seconds: float) -> None:
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass

    def median_of(sleep_ms: float, rehearse: bool = False, then_ms: float = 0.0, then_spin: bool = True) -> float:
        """Median predict time after sleeping sleep_ms, then (rehearse) one throwaway predict, then then_ms of
        spinning (then_spin) or sleeping."""
        times = []
        for _ in range(args.repeats):
            time.sleep(sleep_ms / 1e3)
            if rehearse:
                predict_us()
            if then_spin:
                spin(then_ms / 1e3)
            else:
                time.sleep(then_ms / 1e3)
            times.append(predict_us())
        return statistics.median(times)

    for _ in range(50):
        predict_us()
    print(f"cold_invoke {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: tflite {args.precision}, median of "
          f"{args.repeats} predicts (us) each")
    print("after sleeping S ms:")
    for ms in (0.0, 1.0, 5.0, 20.0, 100.0, 500.0, 1280.0):
        print(f"  {ms:6.0f} ms  {median_of(ms):8.1f}")
    print("after sleeping 300 ms, then spinning S ms (no rehearsal):")
    for ms in (0.0, 0.5, 2.0, 5.0):
        print(f"  {ms:6.1f} ms  {median_of(300.0, then_ms=ms):8.1f}")
    print("after sleeping 300 ms, one throwaway predict, then spinning S ms:")
    for ms in (0.0, 0.5, 1.0, 2.0, 5.0, 10.0):
        print(f"  {ms:6.1f} ms  {median_of(300.0, rehearse=True, then_ms=ms):8.1f}")
    print("after sleeping 300 ms, one throwaway predict, then sleeping S ms:")
    for ms in (1.0, 5.0, 20.0):
        print(f"  {ms:6.1f} ms  {median_of(300.0, rehearse=True, then_ms=ms, then_spin=False):8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
