"""Files shipped with the edge package. Standard library only: the CLI reads these before it knows
whether the command needs numpy (`har-edge --help` must not load it)."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
DEFAULT_BUNDLE = PACKAGE / "models" / "default"
# The shipped example (scripts/make_example.py): the demo streams it, bench replays it by default.
EXAMPLE_RECORDING = PACKAGE / "examples" / "user01_exp01.csv"
