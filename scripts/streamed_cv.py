"""Streamed first-session accuracy of cross-validation runs (training/streamed.py): the headline figure.

    python scripts/streamed_cv.py runs/cv/A runs/cv/A_seed1 runs/cv/A_seed2 [--backend tflite --precision int8]

Each run is one user partition (3 folds); each fold's model streams its own held-out users' raw recordings
through edge.pipeline.Pipeline, a new wearer each (calibration empty at the first recording, carried to the
next). Prints each user's figure, each partition's pooled figure, and the mean and sample standard deviation
over the partitions; writes RUN/streamed_<backend>_<precision>.json.
--choose-smoothing also picks the smoother for each fold on the OTHER folds' held-out users (the training
users of that fold, each scored by a model that never saw them) and reports the result of that choice.
--posture also scores the session-relative sitting / standing rule, fitted per fold on the other folds' users
(RUN/posture_<backend>_<precision>_fold_K.json); --posture-rules TAG applies those files instead of fitting (an
int8 bundle read by the rule its fp32 streams gave, as a shipped bundle carries one rule for both precisions).
"""
from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge.mount import MOUNT_STATES, REMOUNT_DEG, MountCalibration, rotation_matrix  # noqa: E402
from edge.postprocess import SmoothingConfig  # noqa: E402
from edge.posture import PostureConfig  # noqa: E402

from training.config import ConfigError  # noqa: E402
from training.data import default_hapt_path  # noqa: E402
from training.posture import MIN_SHARES, NoRuleFitted, apply_rule, fit_rule, truth_of  # noqa: E402
from training.streamed import (  # noqa: E402
    HaptRecordings,
    Recording,
    pooled,
    score_user,
    stream_run,
    stream_user,
)

# The smoothers --choose-smoothing compares (method, windows, threshold).
SMOOTHING_GRID = [SmoothingConfig("none", 1, 1, t) for t in (0.0, 0.5)] + [
    SmoothingConfig("average", n, 1, t) for n, t in itertools.product((2, 3, 4), (0.0, 0.3, 0.5))]


def describe(s: SmoothingConfig) -> str:
    return f"{s.method}/{s.n}@{s.threshold:g}"


def nested_smoothing(streams, max_lag_s: float | None) -> tuple[list[dict], dict]:
    """For each fold, the smoother with the best label accuracy on the other folds' users (among those whose
    median label lag there is at most max_lag_s, when any is), applied to it."""
    folds = sorted({k for k, *_ in streams})
    table = {describe(s): {k: [score_user(f, u, st, m, s) for f, u, st, m in streams if f == k] for k in folds}
             for s in SMOOTHING_GRID}
    chosen_users, choice = [], {}
    for k in folds:
        def others(name, k=k):
            total = pooled([u for j in folds if j != k for u in table[name][j]])
            fast = max_lag_s is None or total["median_lag_s"] <= max_lag_s
            return fast, total["label_accuracy"]
        best = max(table, key=others) if len(folds) > 1 else describe(SmoothingConfig())
        choice[k] = best
        chosen_users += table[best][k]
    return chosen_users, {"per_fold_choice": choice,
                          "grid": {name: pooled([u for k in folds for u in table[name][k]]) for name in table}}


ONE_POSTURE = {"SITTING": 4, "STANDING": 5}  # HAPT activity ids


def one_posture_sessions(recordings: list[Recording], activity: int) -> list[Recording]:
    """Each recording cut to its samples of one activity, in order: sessions that never show another posture."""
    return [replace(r, raw=r.raw[r.activity == activity], activity=r.activity[r.activity == activity])
            for r in recordings]


def one_posture_streams(streams, data, smoothing: SmoothingConfig) -> dict:
    """(fold, user) -> {posture: [Streamed]}: each held-out user's one-posture sessions, by their fold's model."""
    return {(f, user): {name: stream_user(m, one_posture_sessions(data.of_user(user), activity), smoothing)
                        for name, activity in ONE_POSTURE.items()}
            for f, user, _, m in streams}


def nested_posture(streams, sessions: dict, smoothing: SmoothingConfig, guarded: bool,
                   fixed: dict[int, PostureConfig] | None = None, rises: bool = True) -> tuple[list[dict], dict, dict]:
    """For each fold, the posture rule fitted on the other folds' held-out users (training.posture.fit_rule, the
    guard chosen so that it costs their one-posture sessions next to nothing; `guarded=False`: no guard), applied
    to this fold's users' recorded streams as the runtime's stage would, and to their one-posture sessions (their
    SITTING, or STANDING, samples alone: `sessions`, from one_posture_streams), which the rule must leave as
    the model reads them. `fixed`: fold -> the rule to apply instead of fitting one (an int8 model scored with the
    rule its fp32 streams gave, as a bundle carries one rule for both). `rises=False`: without the references
    sit <-> stand rises name (edge/posture.py), fitted and applied. A fold whose fit leaves no rule (NoRuleFitted:
    every candidate costs the other folds' one-posture sessions too much) is scored without the stage, as a
    bundle without a rule runs, and its details say why.
    -> (users, per-fold details, {posture: [windows, labelled it without, with the rule]})."""
    folds = sorted({k for k, *_ in streams})
    users, details = [], {}
    one = {name: [0, 0, 0] for name in ONE_POSTURE}
    for k in folds:
        grid: dict = {}
        config: PostureConfig | None
        why = None
        if fixed is not None:
            config = fixed[k]
        else:
            training = [s for f, _, streamed, _ in streams if f != k for s in streamed]
            training_one = [s for (f, _), by in sessions.items() if f != k for st in by.values() for s in st]
            model = next(m for f, _, _, m in streams if f == k)
            try:
                config, grid = fit_rule(training, model.classes, model.frontend_config, smoothing,
                                        training_one if guarded else (), MIN_SHARES if guarded else (0.0,), rises)
            except NoRuleFitted as exc:  # this fold's model runs without the stage
                config, grid, why = None, exc.grid, str(exc)
        details[k] = {"config": config.to_dict() if config is not None else None, "grid": grid} | (
            {"no_rule": why} if why else {})
        def ruled(s, classes, config=config):  # the stream as this fold's runtime labels it (no rule: as the model)
            return apply_rule(s, config, classes, smoothing, rises) if config is not None else s

        for f, user, streamed, m in streams:
            if f != k:
                continue
            users.append(score_user(f, user, [ruled(s, m.classes) for s in streamed], m))
            for name, st in sessions[(f, user)].items():
                for s in st:
                    truth = truth_of(s, m.frontend_config)
                    after = ruled(s, m.classes).results
                    one[name][0] += int((truth >= 0).sum())
                    one[name][1] += sum(r["label"] == name for r, t in zip(s.results, truth) if t >= 0)
                    one[name][2] += sum(r["label"] == name for r, t in zip(after, truth) if t >= 0)
    return users, details, one


class RotatedAfterFirst:
    """The recordings with every one after a wearer's first turned by `degrees` about the board's z axis (acc
    and gyro): the board re-mounted between sessions, by a known angle."""

    def __init__(self, data: HaptRecordings, degrees: float) -> None:
        self.data, self.matrix = data, rotation_matrix(np.radians(degrees) * np.array([0.0, 0.0, 1.0]))  # (3, 3)

    def of_user(self, user: int):
        first, *later = sorted(self.data.of_user(user), key=lambda r: r.experiment)
        turned = [replace(r, raw=np.concatenate([r.raw[:, :3] @ self.matrix.T, r.raw[:, 3:] @ self.matrix.T], axis=1))
                  for r in later]  # (n, 6) each
        return [first, *turned]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="`har-train cv` output folders, one per user partition")
    parser.add_argument("--backend", default="torch", choices=("torch", "tflite", "onnx"),
                        help="torch: the fold checkpoint (fp32); tflite/onnx: the fold's bundle fold_K/bundle")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    parser.add_argument("--smoothing", default=SmoothingConfig().method, choices=("average", "vote", "none"))
    parser.add_argument("--window", type=int, default=SmoothingConfig().n, help="smoothing windows")
    parser.add_argument("--threshold", type=float, default=SmoothingConfig().threshold, help="uncertain floor")
    parser.add_argument("--choose-smoothing", action="store_true",
                        help="also choose the smoother per fold on the other folds' users (nested)")
    parser.add_argument("--max-lag", type=float, default=1.5,
                        help="--choose-smoothing prefers smoothers with at most this median label lag (s)")
    parser.add_argument("--remount-deg", type=float, default=REMOUNT_DEG,
                        help="re-learn the calibration when a session's walking is this far off it (0: never)")
    parser.add_argument("--verify-saved", action="store_true",
                        help="a carried calibration is applied only once the session's walking confirms it")
    parser.add_argument("--rotate-later", type=float, default=0.0, metavar="DEG",
                        help="turn each wearer's recordings after the first by DEG about the board's z axis (re-mounted)")
    parser.add_argument("--posture", action="store_true",
                        help="also score the session-relative sitting / standing rule, fitted per fold on the other "
                             "folds' users (nested)")
    parser.add_argument("--no-rises", action="store_true",
                        help="with --posture: without the references sit <-> stand rises name (edge/posture.py)")
    parser.add_argument("--compare-rises", action="store_true",
                        help="with --posture: also fit and score the rule without the rises on the same streams")
    parser.add_argument("--posture-unguarded", action="store_true",
                        help="with --posture: the rule without its guard (the model must see both postures first)")
    parser.add_argument("--posture-out", type=Path, metavar="JSON",
                        help="with --posture: write the rule fitted on all users of the first run (for a bundle)")
    parser.add_argument("--posture-rules", metavar="TAG",
                        help="with --posture: apply each fold's rule written by an earlier --posture run (RUN/posture_TAG_"
                             "fold_K.json, e.g. TAG torch_fp32) instead of fitting one on these streams")
    parser.add_argument("--data", default=default_hapt_path())
    parser.add_argument("--quiet", action="store_true", help="no per-user lines while streaming")
    options = parser.parse_args()
    torch.set_num_threads(1)
    smoothing = SmoothingConfig(options.smoothing, options.window, min(2, options.window), options.threshold)
    hapt = HaptRecordings(options.data)
    data = RotatedAfterFirst(hapt, options.rotate_later) if options.rotate_later else hapt
    tag = f"{options.backend}_{options.precision}" + ("" if options.remount_deg == REMOUNT_DEG
                                                      else f"_remount{options.remount_deg:g}") + (
        "_verify" if options.verify_saved else "") + (f"_rotated{options.rotate_later:g}" if options.rotate_later else "") + (
        "_posture_unguarded" if options.posture and options.posture_unguarded else "") + (
        "_no_rises" if options.posture and options.no_rises else "") + (
        f"_rules_{options.posture_rules}" if options.posture and options.posture_rules else "")
    remount = options.remount_deg or None

    def calibration_factory(config):
        return MountCalibration(config, remount_deg=remount, trust_saved=not options.verify_saved)

    partitions = {}
    for run in options.runs:
        started = time.perf_counter()
        try:
            streams = stream_run(run, data, options.backend, options.precision, smoothing, calibration_factory,
                                 log=(lambda m: None) if options.quiet else print)
        except (ConfigError, ValueError) as exc:
            raise SystemExit(f"streamed_cv: error: {exc}") from None
        users = [score_user(k, u, st, m) for k, u, st, m in streams]
        result = {"run": str(run), "backend": options.backend, "precision": options.precision,
                  "remount_deg": remount, "verify_saved": options.verify_saved,
                  "smoothing": describe(smoothing), "users": users, "pooled": pooled(users),
                  "seconds": time.perf_counter() - started}
        if options.choose_smoothing:
            chosen, details = nested_smoothing(streams, options.max_lag)
            result["nested_smoothing"] = {"pooled": pooled(chosen), **details}
        if options.posture:
            sessions = one_posture_streams(streams, data, smoothing)
            fixed = None
            if options.posture_rules:
                fixed = {}
                for k in sorted({f for f, *_ in streams}):
                    path = run / f"posture_{options.posture_rules}_fold_{k}.json"
                    try:
                        fixed[k] = PostureConfig.from_dict(json.loads(path.read_text())["posture"], str(path))
                    except (OSError, KeyError, ValueError) as exc:
                        raise SystemExit(f"streamed_cv: error: {path}: {exc}; run --posture on that backend first (a fold whose "
                                         "fit left no rule has no file: score it with --posture alone)") from None
            ruled, details, one = nested_posture(streams, sessions, smoothing, not options.posture_unguarded, fixed,
                                                 not options.no_rises)
            if options.compare_rises and not options.no_rises:  # the same streams, the rule without the rises
                without, _, one_without = nested_posture(streams, sessions, smoothing, not options.posture_unguarded,
                                                         fixed, False)
                result["nested_posture_no_rises"] = {"pooled": pooled(without), "users": without,
                                                     "one_posture": one_without}
            result["nested_posture"] = {"pooled": pooled(ruled), "users": ruled, "per_fold": details,
                                        "one_posture": one}
            for k, fold in details.items():  # each fold's rule, for its bundle (scripts/bundle_posture.py)
                if fixed is None:
                    path = run / f"posture_{tag}_fold_{k}.json"
                    if fold["config"] is not None:
                        path.write_text(json.dumps({"posture": fold["config"]}, indent=1) + "\n")
                    else:  # no rule: an earlier run's file must not be read as this fold's (--posture-rules)
                        path.unlink(missing_ok=True)
            if options.posture_out and run == options.runs[0]:
                model = streams[0][3]
                everyone_one = [s for by in sessions.values() for st in by.values() for s in st]
                try:
                    config, grid = fit_rule([s for *_, st, _ in streams for s in st], model.classes,
                                            model.frontend_config, smoothing, everyone_one)
                except NoRuleFitted as exc:
                    raise SystemExit(f"streamed_cv: {options.posture_out} not written: {exc}") from None
                options.posture_out.write_text(json.dumps({"posture": config.to_dict(), "fitted_on": str(run),
                                                           "grid": grid}, indent=1) + "\n")
        partitions[run.name] = result
        (run / f"streamed_{tag}.json").write_text(json.dumps(result, indent=1) + "\n")

    print(f"\nper user ({tag}, smoothing {describe(smoothing)}): fold user windows raw% label% lag_s(median)")
    for name, result in partitions.items():
        for u in sorted(result["users"], key=lambda u: u["user"]):
            lag = np.median(u["lags_s"]) if u["lags_s"] else float("nan")
            recordings = " ".join(f"exp{r['experiment']:02d} {100 * r['label_accuracy']:.1f}" for r in u["recordings"])
            print(f"  {name:<28} {u['fold']} {u['user']:>3} {u['windows']:>5} {100 * u['raw_accuracy']:6.1f} "
                  f"{100 * u['label_accuracy']:6.1f} {lag:5.2f}   ({recordings})")
    print(f"\n{'partition':<28} {'raw %':>6} {'label %':>7} {'worst user':>14} {'median lag s':>12} {'uncertain':>9}")
    for name, result in partitions.items():
        p = result["pooled"]
        print(f"{name:<28} {100 * p['raw_accuracy']:6.2f} {100 * p['label_accuracy']:7.2f} "
              f"{p['worst_user']:>5} ({100 * p['worst_label_accuracy']:.1f}%) {p['median_lag_s']:12.2f} {p['uncertain']:9d}"
              + (f"   nested smoothing: label {100 * result['nested_smoothing']['pooled']['label_accuracy']:.2f}% "
                 f"lag {result['nested_smoothing']['pooled']['median_lag_s']:.2f} s "
                 f"{result['nested_smoothing']['per_fold_choice']}" if "nested_smoothing" in result else ""))
    for key in ("raw_accuracy", "label_accuracy", "median_lag_s"):
        values = np.array([r["pooled"][key] for r in partitions.values()])
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        scale = 1 if key == "median_lag_s" else 100
        print(f"mean over {len(values)} partitions: {key} {scale * values.mean():.2f} ± {scale * spread:.2f}")
    print("\nwhere the errors are: scored windows by where the mount calibration stood when each was labelled")
    print(f"{'partition':<28} " + "  ".join(f"{state + ' (windows, errors, label %)':<44}" for state in MOUNT_STATES))
    for name, result in partitions.items():
        cells = []
        for state in MOUNT_STATES:
            n, correct = result["pooled"]["by_mount_state"][state]
            cells.append(f"{n:>5} {n - correct:>4} {100 * correct / max(1, n):6.2f}".ljust(44))
        print(f"{name:<28} " + "  ".join(cells))
    if options.posture:
        print("\nwith the posture rule (fitted per fold on the other folds' users):")
        for name, result in partitions.items():
            p = result["nested_posture"]["pooled"]
            by_state = "  ".join(f"{state} {100 * c / max(1, n):.2f}%" for state, (n, c) in p["by_mount_state"].items())
            picked = {k: f"q{d['config']['quantile']:g}/gate{d['config']['gate_deg']:g}/share{d['config']['min_share']:g}"
                      if d["config"] is not None else "no rule" for k, d in result["nested_posture"]["per_fold"].items()}
            print(f"{name:<28} label {100 * p['label_accuracy']:6.2f}%  worst user {p['worst_user']} "
                  f"({100 * p['worst_label_accuracy']:.1f}%)  below 90%: {p['users_below_90']}  lag "
                  f"{p['median_lag_s']:.2f} s  [{by_state}]  chosen {picked}")
            for posture, (n, base, ruled) in result["nested_posture"]["one_posture"].items():
                print(f"{'':<28} {posture}-only sessions: {n} windows, labelled {posture} {100 * base / n:.2f}% without "
                      f"the rule, {100 * ruled / n:.2f}% with it")
            if "nested_posture_no_rises" in result:
                q = result["nested_posture_no_rises"]
                print(f"{'':<28} without the rises: label {100 * q['pooled']['label_accuracy']:6.2f}%  worst user "
                      f"{q['pooled']['worst_user']} ({100 * q['pooled']['worst_label_accuracy']:.1f}%)  below 90%: "
                      f"{q['pooled']['users_below_90']}  " + "  ".join(
                          f"{posture}-only {100 * ruled / n:.2f}%" for posture, (n, _, ruled) in q["one_posture"].items()))
        for key, what in (("nested_posture", "with the posture rule"),
                          ("nested_posture_no_rises", "with the posture rule, without the rises")):
            values = np.array([r[key]["pooled"]["label_accuracy"] for r in partitions.values() if key in r])
            if len(values):
                print(f"mean over {len(values)} partitions: label_accuracy {what} {100 * values.mean():.2f} ± "
                      f"{100 * (values.std(ddof=1) if len(values) > 1 else 0):.2f}")
    if options.choose_smoothing:
        values = np.array([r["nested_smoothing"]["pooled"]["label_accuracy"] for r in partitions.values()])
        print(f"mean over {len(values)} partitions: label_accuracy with nested smoothing choice "
              f"{100 * values.mean():.2f} ± {100 * (values.std(ddof=1) if len(values) > 1 else 0):.2f}")


if __name__ == "__main__":
    main()
