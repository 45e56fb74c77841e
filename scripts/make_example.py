"""Cut the shipped example recording out of the real HAPT data (issue: a few minutes, several activities).

    python scripts/make_example.py [--data ../shared/data/HAPT_RawData_train_users.zip]

Writes edge/examples/user01_exp01.csv: experiment 1 of training user 1, raw samples 2300..16399
(4.7 min at 50 Hz: standing, laying, sitting, walking, walking downstairs and upstairs, and the
postural transitions between them, unlabelled), values rounded to 1e-6 (far below the sensor's
noise) to keep the file small, with the true label of every sample.
"""
from __future__ import annotations

import argparse
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path

from firmware_bridge.recording import read_recording, write_recording_csv

from training.data import default_hapt_path

FIRST, LAST = 2300, 16400  # 0-based sample range [FIRST, LAST) of acc_exp01_user01.txt
OUT = Path(__file__).resolve().parent.parent / "edge" / "examples" / "user01_exp01.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(default_hapt_path()))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(args.data) as z:
        for member in z.namelist():
            name = Path(member).name
            if name in ("acc_exp01_user01.txt", "gyro_exp01_user01.txt", "labels.txt"):
                (Path(tmp) / name).write_bytes(z.read(member))
        recording = read_recording(Path(tmp) / "acc_exp01_user01.txt")
    samples = [
        replace(s, seq=i, t_us=i * 20_000, **{k: round(getattr(s, k), 6) for k in ("ax", "ay", "az", "gx", "gy", "gz")})
        for i, s in enumerate(recording.samples[FIRST:LAST])
    ]
    assert recording.labels is not None  # labels.txt is beside it
    write_recording_csv(OUT, samples, recording.labels[FIRST:LAST])
    print(f"wrote {OUT} ({len(samples)} samples, {OUT.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
