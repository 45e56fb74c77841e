"""How far each HAPT wearer's board moved between their two recordings: the angle between the mean
acceleration (gravity) of each recording's WALKING samples, in the board's frame.

    python scripts/remount_angles.py [--data ../shared/data/HAPT_RawData_train_users.zip]

A fact about the data set, not about a model: the users above 10 degrees are those whose second recording
starts with a stale carried mount reference (docs/results.md, "Where the errors are").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge.mount import angle_deg  # noqa: E402

from training.data import default_hapt_path  # noqa: E402
from training.streamed import HaptRecordings  # noqa: E402

WALKING = 1  # HAPT activity id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=default_hapt_path())
    data = HaptRecordings(parser.parse_args().data)
    for user in sorted({u for _, u in data.source.experiments()}):
        recordings = data.of_user(user)
        walking = [r.raw[r.activity == WALKING, :3].mean(axis=0) for r in recordings]  # (3,) each, in g
        moved = [angle_deg(a, b) for a, b in zip(walking, walking[1:])]
        print(f"user {user:2d}: " + ", ".join(f"exp{a.experiment:02d} -> exp{b.experiment:02d} {m:4.1f} deg"
                                                for a, b, m in zip(recordings, recordings[1:], moved)))


if __name__ == "__main__":
    main()
