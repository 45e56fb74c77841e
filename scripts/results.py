"""Regenerate docs/results.md from measurements on this machine.

    python scripts/results.py [--default bilm_e30_mount_mix05] [--skip-bench] [--skip-heldout] [--skip-training-cost]

Reads what `make cv` and `make model` produced (runs/cv/*/cv_summary.json, runs/ship/model.pt,
edge/models/default/bundle.json), then measures, in this run:
- `har-edge bench --json` on the shipped bundle, with torch eager fp32 of the same checkpoint;
- a held-out check: each CV fold's checkpoint of the default variant (its validation subjects never
  seen in training or normalization) is exported, and every recording of those subjects is
  replayed through the streaming runtime; streaming accuracy is compared with the fold's window
  accuracy, and one recording's label timeline is plotted.
Every figure in docs/results.md names the command that produced it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

DOCS = REPO / "docs"
FIGURES = DOCS / "figures"
CV_DIR = REPO / "runs" / "cv"
SHIP_CHECKPOINT = REPO / "runs" / "ship" / "model.pt"
BUNDLE = REPO / "edge" / "models" / "default"
HELDOUT_BUNDLE = REPO / "runs" / "heldout_bundle"


def run(command: list[str]) -> str:
    print("+", " ".join(command), flush=True)
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"results: command failed ({done.returncode}): {' '.join(command)}")
    return done.stdout


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


# --------------------------------------------------------------------------------------------
# Cross-validation


def cv_section(default: str) -> tuple[list[str], dict]:
    from training.config import TrainConfig
    from training.metrics import plot_confusion
    from training.models import create_model, model_summary

    # Keys that say what was trained on or how the run was executed, not how the model was trained.
    not_recipe = {"model", "model_options", "epochs", "data", "subjects", "val_subjects", "folds", "val_fold",
                  "train_all", "num_threads", "eval_batch_size", "max_batches_per_epoch", "progress", "align_mount",
                  "select_epoch"}

    def recipe(cfg: dict) -> str:
        """'30 ep' plus every training option the run set away from its default (seed, augmentation, ...);
        a new option shows up here without being listed. Mount alignment is named whenever on (runs made
        before the option existed lack the key: they were not aligned)."""
        defaults = TrainConfig().to_dict()
        changed = [f"{k}={v}" for k, v in cfg.items() if k in defaults and k not in not_recipe and v != defaults[k]]
        return " ".join([f"{cfg['epochs']} ep"] + (["**mount-aligned**"] if cfg.get("align_mount") else []) + changed)

    summaries = {p.parent.name: json.loads(p.read_text()) for p in sorted(CV_DIR.glob("*/cv_summary.json"))}
    if not summaries:
        raise SystemExit(f"results: no cross-validation runs in {CV_DIR}; run `make cv` first")
    lines = [
        "## Cross-validated accuracy (subject-wise, 21 training users)",
        "",
        "3 folds of 7 held-out users each (`training.data.subject_folds`, seed 0); every fold trains on the other 14",
        "users and fits the normalization on them only. **Headline: streamed first-session accuracy** "
        "(`scripts/streamed_cv.py`, training/streamed.py): each held-out wearer's raw recordings streamed through "
        "`edge.pipeline.Pipeline` in time order, mount calibration empty at their first recording and carried to "
        "the next, windows wholly inside one labelled activity scored, `label` (what the wearer sees) and "
        "`raw_label`; shown for runs that kept the last epoch (`select_epoch=last`, nothing chosen on the scored "
        "users). The columns after it are the older window figures, each held-out wearer *calibrated* on all of "
        "their own moving windows (optimistic), and, for runs marked 'best', with the epoch of best held-out "
        "macro-F1 (more optimistic still). Mean ± sample standard deviation over the folds.",
        "",
        "| run | model | params | MACs / window | RF | training | epoch kept | streamed label % | streamed raw % "
        "| calibrated accuracy % | macro-F1 | min-max accuracy % | pooled acc % | s / epoch (1 thread) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run_name, s in summaries.items():
        cfg = s["train_config"]
        model = create_model(cfg["model"], **cfg.get("model_options", {}))
        info = model_summary(model)
        acc, f1 = s["accuracy"], s["macro_f1"]
        streamed_path = CV_DIR / run_name / "streamed_torch_fp32.json"
        streamed = json.loads(streamed_path.read_text())["pooled"] if streamed_path.exists() else None
        honest = (f"| {pct(streamed['label_accuracy'])} | {pct(streamed['raw_accuracy'])} " if streamed
                  else "| - | - ")
        lines.append(
            f"| `{run_name}` | {cfg['model']}{' ' + json.dumps(cfg['model_options']) if cfg.get('model_options') else ''} "
            f"| {info['params']:,} | {info['macs'] / 1e6:.2f} M | {info['receptive_field']} | {recipe(cfg)} "
            f"| {cfg.get('select_epoch', 'best')} {honest}"
            f"| {pct(acc['mean'])} ± {pct(acc['std'])} | {f1['mean']:.3f} ± {f1['std']:.3f} "
            f"| {pct(acc['min'])}-{pct(acc['max'])} | {pct(s['pooled']['accuracy'])} "
            f"| {s['train_seconds_per_epoch']['mean']:.0f} |")
    lines += ["", "Commands: `make cv` (each run: `har-train cv --folds 3 --config training/configs/cv/NAME.json "
              "--set num_threads=1 --out runs/cv/NAME`; the training column gives its epochs and other keys), "
              "then `python scripts/streamed_cv.py runs/cv/NAME ...` for the streamed columns (`make streamed`). "
              "Seconds per epoch were measured "
              "with two or three folds' processes sharing the 2 cores, so they are upper bounds.", ""]
    chosen = summaries.get(default)
    if chosen:
        png = FIGURES / "cv_confusion.png"
        plot_confusion(chosen["pooled"], list(chosen["pooled"]["per_class"]), png,
                       title=f"{default}: all held-out windows of 3 subject folds")
        # The shipped bundle carries its variant's held-out confusion (the shipped model itself has no held-out users).
        shutil.copyfile(png, BUNDLE / "cv_confusion.png")
        shutil.copyfile(CV_DIR / default / "cv_confusion.txt", BUNDLE / "cv_confusion.txt")
        lines += [f"Pooled confusion matrix of the default variant (`{default}`), all held-out windows:", "",
                  f"![confusion](figures/{png.name})", "", "```", (CV_DIR / default / "cv_confusion.txt").read_text().rstrip(), "```", ""]
        per_fold = ", ".join(f"fold {f['fold']} {pct(f['accuracy'])}% (users {f['val_subjects']})" for f in chosen["per_fold"])
        lines += [f"Per fold: {per_fold}.", ""]
    return lines, summaries


# --------------------------------------------------------------------------------------------
# Export formats


def format_table(bundle_dir: Path) -> list[str]:
    metrics = json.loads((bundle_dir / "bundle.json").read_text())["metrics"]
    lines = [f"Evaluated on: {metrics['evaluation']}.", "",
             "| format | accuracy % | macro-F1 | top-1 agreement with torch % | max / mean abs logit diff | file KB "
             "| median ms | p99 ms |", "|---|---|---|---|---|---|---|---|"]
    for name, row in metrics["formats"].items():
        size = f"{row['file_bytes'] / 1024:.1f}" if row.get("file_bytes") else "-"
        lines.append(f"| {name} | {pct(row['accuracy'])} | {row['macro_f1']:.3f} | {pct(row['top1_agreement'])} "
                     f"| {row['max_abs_logit_diff']:.3g} / {row['mean_abs_logit_diff']:.3g} | {size} "
                     f"| {row['latency_ms_median']:.3f} | {row['latency_ms_p99']:.3f} |")
    missed = metrics.get("targets_missed") or []
    lines += ["", "Targets (int8 accuracy within 0.5 points of fp32, top-1 agreement >= 99%): "
              + ("missed: " + "; ".join(missed) if missed else "all met."), ""]
    return lines


def export_section(default: str) -> list[str]:
    lines = ["## Accuracy, size and latency per export format", "",
             f"Held-out figures: the default variant's fold-0 checkpoint (`runs/cv/{default}/fold_0/model.pt`), "
             "exported with `har-export runs/cv/.../fold_0/model.pt --out runs/heldout_bundle/fold_0`, evaluated on its 7 "
             "held-out users' windows. Latency: batch 1, one thread, measured inside the export run.", ""]
    lines += format_table(HELDOUT_BUNDLE / "fold_0")
    lines += ["The shipped model (`make model`: trained on all 21 users, so its windows are not held out; the table "
              "shows its agreement with torch, file sizes and latency):", ""]
    lines += format_table(BUNDLE)
    return lines


# --------------------------------------------------------------------------------------------
# Benchmarks


def bench_section() -> list[str]:
    options = ["--json", "--bundle", str(BUNDLE.relative_to(REPO))]
    command = [sys.executable, "-m", "edge.cli", "bench", *options]
    shown = ["har-edge", "bench", *options]
    if SHIP_CHECKPOINT.exists():  # the torch baseline lives outside the edge package
        options += ["--torch-checkpoint", str(SHIP_CHECKPOINT.relative_to(REPO))]
        command = [sys.executable, "scripts/bench_torch.py", *options]
        shown = ["python", "scripts/bench_torch.py", *options]
    out = run(command)
    figures = json.loads(out[out.index("{"):])
    (FIGURES / "bench.json").write_text(json.dumps(figures, indent=2) + "\n")
    from edge.bench import format_table

    return ["## Latency, throughput and memory on this machine", "",
            f"`{' '.join(shown)}` (all rows measured side by side in one run; raw JSON in "
            "[figures/bench.json](figures/bench.json))", "", "```", format_table(figures), "```", ""]


# --------------------------------------------------------------------------------------------
# Held-out streaming check


def export_heldout_bundles(default: str, summaries: dict) -> None:
    """Export each CV fold's checkpoint of the default variant: a bundle that never saw its fold's users."""
    for fold in summaries[default]["per_fold"]:
        k = fold["fold"]
        run([sys.executable, "-m", "export.cli", str(CV_DIR / default / f"fold_{k}" / "model.pt"),
             "--out", str(HELDOUT_BUNDLE / f"fold_{k}"), "--force"])


def heldout_section(default: str, summaries: dict) -> list[str]:
    from training.data import default_hapt_path

    summary = summaries[default]
    per_user = []  # (fold, user, windows scored, raw correct, smoothed correct, realtime factor)
    plotted = None
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(default_hapt_path()) as z:
        raw_dir = Path(tmp)
        for member in z.namelist():
            if Path(member).name.endswith(".txt"):
                (raw_dir / Path(member).name).write_bytes(z.read(member))
        for fold in summary["per_fold"]:
            bundle = HELDOUT_BUNDLE / f"fold_{fold['fold']}"
            for user in fold["val_subjects"]:
                scored = raw_ok = smooth_ok = 0
                factors = []
                for acc in sorted(raw_dir.glob(f"acc_exp*_user{user:02d}.txt")):
                    out_json = raw_dir / (acc.stem + ".json")
                    # One calibration file per user: a fresh wearer on their first recording, carried into the next.
                    command = [sys.executable, "-m", "edge.cli", "replay", str(acc), "--bundle", str(bundle.relative_to(REPO)),
                               "--quiet", "--summary-json", str(out_json),
                               "--mount-calibration", str(raw_dir / f"mount_user{user:02d}.json")]
                    if plotted is None:
                        command += ["--plot", str(FIGURES / "timeline_heldout.png")]
                        plotted = (acc.name, fold["fold"])
                    run(command)
                    r = json.loads(out_json.read_text())
                    t = r["truth"]
                    scored += t["scored_windows"]
                    raw_ok += t.get("raw_correct", 0)  # absent when no window was scored
                    smooth_ok += t.get("smoothed_correct", 0)
                    factors.append(r["realtime_factor"])
                per_user.append((fold["fold"], user, scored, raw_ok, smooth_ok, min(factors)))
    total = sum(u[2] for u in per_user)
    lines = [
        "## Streaming on held-out users", "",
        f"Each fold's checkpoint of the default variant (`runs/cv/{default}/fold_K/model.pt`, whose 7 validation users "
        "were never seen in its training or normalization) is exported with `har-export ... --out "
        "runs/heldout_bundle/fold_K`; then every raw recording of that fold's users is replayed through the streaming "
        "runtime (`har-edge replay acc_expNN_userMM.txt --bundle runs/heldout_bundle/fold_K`, TFLite int8). Same "
        "front-end as training, but on the device's own 64-sample grid from the start of each recording rather than "
        "the training grid from each labelled segment's start; only windows that lie inside one labelled activity "
        "are scored. A mount-aligned model calibrates online as on the device: each user starts uncalibrated on "
        "their first recording, and the calibration (`--mount-calibration`, one file per user) carries into the "
        "next.", "",
        "| fold | window accuracy at training (torch fp32) % | streaming windows scored | streaming raw % "
        "| streaming smoothed % |", "|---|---|---|---|---|",
    ]
    for fold in summary["per_fold"]:
        rows = [u for u in per_user if u[0] == fold["fold"]]
        n = sum(u[2] for u in rows)
        lines.append(f"| {fold['fold']} | {pct(fold['accuracy'])} | {n} | {pct(sum(u[3] for u in rows) / n)} "
                     f"| {pct(sum(u[4] for u in rows) / n)} |")
    lines.append(f"| all | {pct(summary['pooled']['accuracy'])} (pooled) | {total} "
                 f"| {pct(sum(u[3] for u in per_user) / total)} | {pct(sum(u[4] for u in per_user) / total)} |")
    lines += ["", "Smoothing: probability average over the last 3 windows, 'uncertain' below confidence 0.5 "
              "(counted as wrong).", "",
              "| fold | user | windows scored | raw % | smoothed % | replay x real time (slowest recording) |",
              "|---|---|---|---|---|---|"]
    for k, user, n, raw_ok, smooth_ok, factor in per_user:
        lines.append(f"| {k} | {user} | {n} | {pct(raw_ok / n)} | {pct(smooth_ok / n)} | {factor:.0f} |")
    assert plotted is not None  # the first held-out recording is plotted
    lines += ["", f"Label timeline of {plotted[0]} (held out in fold {plotted[1]}) against its true labels:", "",
              "![timeline](figures/timeline_heldout.png)", ""]
    return lines


def mount_section(summaries: dict) -> list[str]:
    """Every mount-aligned CV run scored with the wearer calibrated, in a first session, and uncalibrated."""
    runs = [name for name, s in summaries.items() if s["train_config"].get("align_mount")]
    if not runs:
        return []
    lines = ["## Mount alignment: calibrated, first session, uncalibrated", "",
             "A mount-aligned model (`align_mount`, `edge/mount.py`) sees each wearer's windows rotated so "
             "that their gravity direction while walking is the training wearers' mean (runs named `_mix05` "
             "also trained on half of the windows unaligned, `mount_unaligned_fraction=0.5`, the default). "
             "The CV table above scores "
             "each held-out wearer calibrated on their own moving windows (a wearer with a saved "
             "`--mount-calibration` file). `python scripts/mount_cv.py runs/cv/NAME` also scores the same windows "
             "as a first session (the device's online calibration, empty at the wearer's first recording, fed "
             "every stream window in time order, carried into their second recording; identity until 20 moving "
             "windows) and with no calibration at all. Labels only score.", ""]
    command = [sys.executable, "scripts/mount_cv.py", *(str(CV_DIR / name) for name in runs)]
    out = run(command)
    lines += [f"`python scripts/mount_cv.py {' '.join('runs/cv/' + name for name in runs)}`:", "",
              "```", out.rstrip(), "```", ""]
    return lines


def training_cost_section() -> list[str]:
    command = [sys.executable, "scripts/bench_train.py"]
    out = run(command)
    return ["## Training cost", "", "`python scripts/bench_train.py` (every variant side by side in one process, one "
            "thread, on this 2-core machine):", "", "```", out.rstrip(), "```", ""]


def previous_sections(path: Path) -> dict[str, list[str]]:
    """'## heading' -> that section's lines in the existing results page."""
    sections: dict[str, list[str]] = {}
    heading = None
    for line in (path.read_text().splitlines() if path.exists() else []):
        if line.startswith("## "):
            heading = line
            sections[heading] = []
        if heading is not None:
            sections[heading].append(line)
    return sections


def kept(previous: dict[str, list[str]], heading: str, flag: str) -> list[str]:
    if heading not in previous:
        raise SystemExit(f"results: {flag} keeps the existing '{heading}' section, but docs/results.md has none; "
                         f"run without {flag}")
    return previous[heading]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", default="bilm_e30_last", help="the shipped variant's CV run name")
    keep = " (keeps that section of the existing docs/results.md as it was measured)"
    parser.add_argument("--skip-bench", action="store_true", help="do not re-run the benchmarks" + keep)
    parser.add_argument("--skip-heldout", action="store_true", help="do not re-run the held-out replay" + keep)
    parser.add_argument("--skip-training-cost", action="store_true", help="do not re-time training" + keep)
    args = parser.parse_args()
    previous = previous_sections(DOCS / "results.md")
    FIGURES.mkdir(parents=True, exist_ok=True)
    started = time.time()
    lines = ["# Results", "",
             f"Regenerated by `python scripts/results.py {' '.join(sys.argv[1:]) or '--default ' + args.default}` "
             f"on {time.strftime('%Y-%m-%d')}, on this project's 2-core x86-64 development machine (no GPU). Every "
             "number below was measured here; the 9 UCI-HAR test users are not in this data and were never used."
             + (" Sections named by a --skip flag are kept as the previous full run measured them."
                if args.skip_bench or args.skip_heldout or args.skip_training_cost else ""), ""]
    cv_lines, summaries = cv_section(args.default)
    lines += cv_lines
    lines += mount_section(summaries)
    export_heldout_bundles(args.default, summaries)
    lines += export_section(args.default)
    lines += (kept(previous, "## Training cost", "--skip-training-cost") if args.skip_training_cost
              else training_cost_section())
    lines += (kept(previous, "## Latency, throughput and memory on this machine", "--skip-bench") if args.skip_bench
              else bench_section())
    lines += (kept(previous, "## Streaming on held-out users", "--skip-heldout") if args.skip_heldout
              else heldout_section(args.default, summaries))
    # The page's other sections (the streamed accuracy, fleet, soak, enrolment, runtime and own-data figures)
    # are made by their own scripts, each named in its section with its date: kept as measured, after these.
    generated = {line for line in lines if line.startswith("## ")}
    for heading, section in previous.items():
        if heading not in generated:
            lines += ["", *section] if lines[-1] else section
    tmp = DOCS / "results.md.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, DOCS / "results.md")  # a failed run leaves the old page, never half a page
    print(f"wrote {DOCS / 'results.md'} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
