"""Wearer enrolment, subject-wise: each held-out wearer enrols from their first recording, and their other
recording is streamed through the edge pipeline as the device does, with and without the profile.

    python scripts/enroll_cv.py train runs/enroll_cv            # 3 fold models, 30 epochs, LAST epoch kept
    python scripts/enroll_cv.py export runs/enroll_cv           # har-export each fold (features output)
    python scripts/enroll_cv.py score runs/enroll_cv [--json runs/enroll_cv/scores.json]
    python scripts/enroll_cv.py table runs/enroll_cv/scores.json   # per user and per fold, from the JSON
    python scripts/enroll_cv.py cost --profile p.json --recording R   # the profile stage's cost per window

`train`: the folds of `har-train cv --folds 3` (seed 0), each trained on its training users only with
train_all=true, so the saved weights are those of the last epoch, chosen by no held-out score (`har-train cv`
keeps the epoch with the best held-out macro-F1, which would tune on the scored wearers).

`score`: for every held-out wearer of every fold (the fold's bundle never saw them), with the fold's bundle
(tflite int8, what the device runs): the profile is fitted with `edge.enroll` on the labelled windows of the
wearer's first recording (HAPT acc_expNN_userMM.txt, labels from labels.txt; all of them, or only the first
1, 2 or 5 minutes of labelled windows), then the wearer's second recording is streamed through
`edge.pipeline.Pipeline` exactly as `har-edge replay` does (mount calibration learnt online from empty,
smoothing on) with and without the profile. Accuracy = windows lying inside one labelled activity whose
label is right: `raw` the window's own decision, `smoothed` the label the device outputs. The re-mount check
streams the second recording rotated by 20 degrees (a board re-mounted after enrolment) with the profile of
the unrotated first one. No setting is chosen on these figures: the penalty is chosen per wearer on their
enrolment recording alone (edge.enroll.choose_l2).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from training.config import load_train_config  # noqa: E402
from training.data import subject_folds  # noqa: E402

FOLDS = 3


def train(run_dir: Path, overrides: list[str]) -> None:
    from training.train import fit, load_windows

    config = load_train_config(None, ["epochs=30", "num_threads=1", "progress=false", *overrides])
    windows, train_windows = load_windows(config)
    folds = subject_folds(np.unique(windows.subject), FOLDS, config.seed)
    for i, (train_subjects, val_subjects) in enumerate(folds):
        out = run_dir / f"fold_{i}"
        if (out / "model.pt").exists():
            print(f"fold {i}: {out}/model.pt exists, kept", flush=True)
            continue
        fold_config = replace(config, subjects=list(train_subjects), train_all=True)
        fit(fold_config, out, windows=windows, train_windows=train_windows)
        (out / "held_out.json").write_text(json.dumps({"val_subjects": val_subjects,
                                                       "train_subjects": train_subjects}) + "\n")
        print(f"fold {i}: trained on {train_subjects}, held out {val_subjects} -> {out}/model.pt", flush=True)


def export(run_dir: Path) -> None:
    from export.cli import run_export

    for checkpoint in sorted(run_dir.glob("fold_*/model.pt")):
        out = checkpoint.parent / "bundle"
        if (out / "bundle.json").exists():
            print(f"{out} exists, kept", flush=True)
            continue
        run_export(checkpoint, out, runs=20, force=True)


def hapt_folder(run_dir: Path) -> Path:
    """The HAPT zip extracted once (read_recording reads acc_expNN_userMM.txt files with labels.txt beside)."""
    import zipfile

    from training.data import default_hapt_path

    folder = run_dir / "hapt"
    if not (folder / "labels.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(default_hapt_path()) as z:
            for member in z.namelist():
                if "/RawData/" in member and member.endswith(".txt"):
                    (folder / Path(member).name).write_bytes(z.read(member))
    return folder


def user_recordings(folder: Path) -> dict[int, list[Path]]:
    """user -> their acc_expNN_userMM.txt files in experiment order (the first is the enrolment one)."""
    import re

    users: dict[int, list[Path]] = {}
    for path in sorted(folder.glob("acc_exp*_user*.txt")):
        found = re.search(r"_user(\d+)", path.name)
        assert found is not None, path  # matched the glob: acc_expNN_userMM.txt
        user = int(found.group(1))
        users.setdefault(user, []).append(path)
    return users


def rotated(recording, degrees: float, axis=(0.0, 0.0, 1.0)):
    """The recording as a board re-mounted by `degrees` about `axis` sees it (acc and gyro rotated)."""
    from scipy.spatial.transform import Rotation

    from firmware_bridge.protocol import Sample

    matrix = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis)).as_matrix()
    samples = []
    for s in recording.samples:
        v = np.asarray(s.values(), float)  # (6,) acc g, gyro rad/s
        samples.append(Sample(s.seq, s.t_us, *(matrix @ v[:3]), *(matrix @ v[3:])))
    return replace(recording, samples=samples)


def stream_scores(model, recording, profile, calibration=None) -> dict:
    """The recording through the device pipeline (mount calibration from empty, or a copy of `calibration`)
    -> correct / scored windows."""
    from edge.mount import MountCalibration
    from edge.pipeline import Pipeline
    from edge.scoring import truth_summary
    from edge.sources import RecordingSource

    if calibration is not None:
        calibration = MountCalibration.from_dict(model.mount, calibration.to_dict())
    pipeline = Pipeline(model, notify=lambda m: None, profile=profile, calibration=calibration)
    results = []
    for item in RecordingSource(recording.samples, rate_hz=model.frontend_config.sample_rate_hz):
        results += pipeline.process(item)
    truth = truth_summary(results, recording.labels, model.frontend_config.window)
    return {"n": truth["scored_windows"], "raw": truth["raw_correct"], "smoothed": truth["smoothed_correct"]}


LENGTHS = {"1 min": 60.0, "2 min": 120.0, "5 min": 300.0, "all": None}


def score(run_dir: Path, json_out: Path | None) -> dict:
    import time

    from firmware_bridge.recording import read_recording

    from edge.enroll import enrol, enrolment_calibration, recording_windows
    from edge.model import load_model

    folder = hapt_folder(run_dir)
    recordings = user_recordings(folder)
    rows = []
    for fold_dir in sorted(run_dir.glob("fold_*")):
        held_out = json.loads((fold_dir / "held_out.json").read_text())["val_subjects"]
        model = load_model(fold_dir / "bundle", "tflite", "int8")
        for user in held_out:
            first, *others = recordings[user]
            enrolment = read_recording(first)
            assert enrolment.labels is not None  # HAPT recordings are labelled
            row = {"fold": fold_dir.name, "user": user, "enrol": first.name, "scored": [p.name for p in others]}
            scored = [read_recording(p) for p in others]
            row["without"] = [stream_scores(model, r, None) for r in scored]
            row["rotated_without"] = [stream_scores(model, rotated(r, 20.0), None) for r in scored]
            for name, seconds in LENGTHS.items():
                data = recording_windows(model, enrolment.samples, enrolment.labels, seconds, str(first))
                started = time.perf_counter()
                profile, summary = enrol(model, data)
                row.setdefault("enrol_seconds", {})[name] = time.perf_counter() - started
                row.setdefault("enrol_windows", {})[name] = len(data.windows)
                row[f"with {name}"] = [stream_scores(model, r, profile) for r in scored]
                if name == "all":
                    row["rotated_with"] = [stream_scores(model, rotated(r, 20.0), profile) for r in scored]
                    saved = enrolment_calibration(model, data.windows)  # `har-edge enroll --mount-calibration`
                    row["saved_calibration_without"] = [stream_scores(model, r, None, saved) for r in scored]
                    row["saved_calibration_with"] = [stream_scores(model, r, profile, saved) for r in scored]
                    row["fit_seconds"] = max(h.fit["fit_seconds"] for h in profile.heads.values())
            rows.append(row)
            line = "  ".join(f"{k} {100 * sum(s['raw'] for s in row[k]) / sum(s['n'] for s in row[k]):.1f}%"
                             for k in ["without", *[f"with {n}" for n in LENGTHS], "rotated_without", "rotated_with",
            "saved_calibration_without", "saved_calibration_with"])
            print(f"{fold_dir.name} user {user:2d}: {line}", flush=True)
    report = summarize(rows)
    if json_out:
        json_out.write_text(json.dumps({"rows": rows, "summary": report}, indent=1) + "\n")
    return report


def per_user_table(rows: list[dict]) -> None:
    keys = ["without", *[f"with {n}" for n in LENGTHS], "rotated_without", "rotated_with",
            "saved_calibration_without", "saved_calibration_with"]
    print("| fold | user | windows | " + " | ".join(k.replace("_", " ") for k in keys) + " |")
    print("|---" * (len(keys) + 3) + "|")
    for r in rows:
        cells = [f"{100 * sum(s['raw'] for s in r[k]) / sum(s['n'] for s in r[k]):.1f}" for k in keys]
        print(f"| {r['fold'][-1]} | {r['user']} | {sum(s['n'] for s in r['without'])} | " + " | ".join(cells) + " |")


def summarize(rows: list[dict]) -> dict:
    keys = ["without", *[f"with {n}" for n in LENGTHS], "rotated_without", "rotated_with",
            "saved_calibration_without", "saved_calibration_with"]
    report = {}
    for key in keys:
        for kind in ("raw", "smoothed"):
            per_user = {r["user"]: sum(s[kind] for s in r[key]) / sum(s["n"] for s in r[key]) for r in rows}
            pooled = sum(sum(s[kind] for s in r[key]) for r in rows) / sum(sum(s["n"] for s in r[key]) for r in rows)
            worst = min(per_user, key=lambda user: per_user[user])
            report[f"{key} {kind}"] = {"pooled": pooled, "worst_user": worst, "worst": per_user[worst],
                                       "below_95": sorted(u for u, a in per_user.items() if a < 0.95),
                                       "per_user": per_user}
    print(f"{'':<22}{'pooled':>8}{'worst user':>12}{'users < 95%':>13}")
    for key, r in report.items():
        print(f"{key:<22}{100 * r['pooled']:>7.2f}%{r['worst_user']:>5d} {100 * r['worst']:>5.1f}%"
              f"{len(r['below_95']):>13d}")
    fits = [r["fit_seconds"] for r in rows]
    enrols = [r["enrol_seconds"]["all"] for r in rows]
    print(f"one head's final fit (L-BFGS) median {1e3 * np.median(fits):.0f} ms, max {1e3 * max(fits):.0f} ms; whole "
          f"enrol() (model on the windows in both mount states, penalty chosen from 5 x 2 fits per head, final fits) "
          f"median {np.median(enrols):.2f} s, max {max(enrols):.2f} s")
    windows = {n: np.median([r["enrol_windows"][n] for r in rows]) for n in LENGTHS}
    print("median enrolment windows per length: " + ", ".join(f"{n}: {w:.0f}" for n, w in windows.items()))
    return report


def cost(bundle: Path, profile_path: Path, recording_path: Path, repeats: int = 3) -> None:
    """What the profile costs per window on the live path: the recording fed 64 samples at a time (one window per
    call, as a live board completes them), with and without the profile, alternating, `repeats` times each."""
    from firmware_bridge.recording import read_recording

    from edge.enroll import load_profile
    from edge.model import load_model
    from edge.pipeline import Pipeline
    from edge.sources import RecordingSource

    model = load_model(bundle, "tflite", "int8")
    profile = load_profile(profile_path, model)
    recording = read_recording(recording_path)
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, p in (("without", None), ("with", profile)):
            pipeline = Pipeline(model, notify=lambda m: None, profile=p)
            pipeline.warm_up()
            for item in RecordingSource(recording.samples, block=64):
                pipeline.process(item)
            t = pipeline.timers
            for stage in ("inference", "profile", "pipeline"):
                stages.setdefault(f"{name} {stage}", []).append(1e6 * t.seconds[stage] / max(1, pipeline.windows))
    for key, values in stages.items():
        print(f"{key:<22} {np.median(values):8.1f} us/window (median of {repeats} runs)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the fold models (last epoch kept)")
    t.add_argument("run_dir", type=Path)
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    e = sub.add_parser("export", help="har-export each fold's checkpoint into fold_K/bundle")
    e.add_argument("run_dir", type=Path)
    t = sub.add_parser("table", help="the figures of a `score --json` file again, per fold and per user")
    t.add_argument("json_file", type=Path)
    s = sub.add_parser("score", help="enrol each held-out wearer and stream their other recording")
    s.add_argument("run_dir", type=Path)
    s.add_argument("--json", type=Path, help="also write every figure as JSON")
    c = sub.add_parser("cost", help="per-window cost of the profile stage on the live path")
    c.add_argument("--bundle", type=Path, default=Path("edge/models/default"))
    c.add_argument("--profile", type=Path, required=True)
    c.add_argument("--recording", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.command == "train":
        train(args.run_dir, args.overrides)
    elif args.command == "cost":
        cost(args.bundle, args.profile, args.recording)
    elif args.command == "export":
        export(args.run_dir)
    elif args.command == "table":
        rows = json.loads(args.json_file.read_text())["rows"]
        per_user_table(rows)
        for fold in sorted({r["fold"] for r in rows}):
            print(f"\n{fold}:")
            summarize([r for r in rows if r["fold"] == fold])
        print("\nall folds:")
        summarize(rows)
    else:
        score(args.run_dir, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
