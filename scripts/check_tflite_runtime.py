"""Run a bundle's TFLite models under whichever TFLite runtime this Python has, and compare runtimes.

    # in an environment with tflite-runtime (it needs numpy<2):
    python3 -m venv /tmp/tflrt && /tmp/tflrt/bin/pip install tflite-runtime "numpy<2" "scipy<1.14" cobs pyserial
    /tmp/tflrt/bin/python scripts/check_tflite_runtime.py run /tmp/tflite_runtime.json
    # in the project's environment (ai_edge_litert):
    python scripts/check_tflite_runtime.py run /tmp/ai_edge_litert.json
    python scripts/check_tflite_runtime.py compare /tmp/tflite_runtime.json /tmp/ai_edge_litert.json

The same 64 fixed windows (seeded) go through the int8 and fp32 TFLite files; `compare` prints
the max abs logit difference and top-1 agreement per precision. Prints figures; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def run(bundle_dir: str, out: str) -> None:
    from edge.bundle import load_bundle
    from edge.inference import create_session

    bundle = load_bundle(bundle_dir)
    windows = np.random.default_rng(0).standard_normal((64, bundle.window, len(bundle.channels))).astype(np.float32)
    logits = {}
    for precision in ("int8", "fp32"):
        session = create_session(bundle, "tflite", precision)
        logits[precision] = {"runtime": session.runtime, "logits": session.predict(windows).tolist()}
        print(f"{precision}: {session.describe()}")
    Path(out).write_text(json.dumps(logits))


def compare(a_path: str, b_path: str) -> None:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    for precision in a:
        la, lb = np.array(a[precision]["logits"]), np.array(b[precision]["logits"])
        print(f"{precision}: {a[precision]['runtime']} vs {b[precision]['runtime']}: max abs logit diff "
              f"{np.abs(la - lb).max():.4g}, top-1 agreement {100 * (la.argmax(1) == lb.argmax(1)).mean():.1f}% "
              f"({len(la)} windows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out")
    r.add_argument("--bundle", default=str(REPO / "edge" / "models" / "default"))
    c = sub.add_parser("compare")
    c.add_argument("a")
    c.add_argument("b")
    args = parser.parse_args()
    run(args.bundle, args.out) if args.command == "run" else compare(args.a, args.b)


if __name__ == "__main__":
    main()
