"""`har-train`: fit | cv | evaluate | models.

    har-train fit --out runs/physics [--config training/configs/default.json] [--set epochs=40 --set ema=true]
    har-train fit --out runs/ship --set train_all=true          # final model: all subjects, last/EMA epoch
    har-train fit --out runs/mine --data my_recordings/ --init default    # fine-tune on your own data
    har-train fit --out runs/physics --resume                   # continue an interrupted run
    har-train evaluate MODEL --data PATH [--split test] [--json OUT] [--confusion OUT.png]
    har-train cv  --out runs/cv_h64 --folds 5 --model tcn_physics_h64 [--set ...]
    har-train models                                             # variants with params / MACs / RF

Configuration: defaults of training/config.py <- --config JSON <- --model/--folds <- --set key=value.
Bad input (unknown key, missing data, bad file) prints one line `har-train: error: ...` and exits 2.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="har-train", description="Train and evaluate the HAR models.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--config", help="JSON file of TrainConfig keys (see training/configs/default.json)")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key; repeatable (e.g. --set epochs=40 --set val_subjects=[1,3])")
        p.add_argument("--model", help="model variant (same as --set model=NAME)")
        p.add_argument("--data", help="data set: HAPT raw data, a folder of recordings with manifest.csv or "
                                      "UCI-HAR (docs/datasets.md; same as --set data=PATH)")
        p.add_argument("--out", required=True, help="output directory (created)")

    fit = sub.add_parser("fit", help="train one model; validate on held-out subjects unless train_all=true")
    common(fit)
    fit.add_argument("--init", metavar="CHECKPOINT",
                     help="fine-tune from this model.pt ('default': the shipped model's); a changed class set "
                          "replaces the head (same as --set init=...)")
    fit.add_argument("--resume", action="store_true",
                     help="continue the unfinished run in --out from its training_state.pt (same settings)")
    fit.add_argument("--force", action="store_true",
                     help="replace the run already in --out (finished or not) instead of refusing")
    cv = sub.add_parser("cv", help="subject-wise k-fold cross-validation")
    common(cv)
    cv.add_argument("--folds", type=int, help="number of subject folds (same as --set folds=K)")
    evaluate = sub.add_parser("evaluate", help="score a checkpoint or a bundle on a data set")
    evaluate.add_argument("model", help="model.pt (har-train fit) or a bundle directory (har-export)")
    evaluate.add_argument("--data", help="data set (default: the HAPT zip of the shared data)")
    evaluate.add_argument("--split", default="train", choices=("train", "test"),
                          help="UCI-HAR split (default train; other kinds have none)")
    evaluate.add_argument("--subjects", help="only these subjects, e.g. 1,3,5")
    evaluate.add_argument("--backend", choices=("tflite", "onnx"), default="tflite", help="bundle backend")
    evaluate.add_argument("--precision", choices=("int8", "fp32"), default="int8", help="bundle precision")
    evaluate.add_argument("--json", metavar="OUT", help="write the report as JSON")
    evaluate.add_argument("--confusion", metavar="OUT.png", help="draw the confusion matrix")
    models = sub.add_parser("models", help="list the model variants with parameters, MACs and receptive field")
    models.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def _config(args):
    from training.config import load_train_config

    overrides = []
    if args.model:
        overrides.append(f"model={args.model}")
    if getattr(args, "folds", None) is not None:
        overrides.append(f"folds={args.folds}")
    if args.data:
        overrides.append(f"data={args.data}")
    if getattr(args, "init", None):
        overrides.append(f"init={args.init}")
    return load_train_config(args.config, overrides + list(args.overrides))


def _models(as_json: bool) -> None:
    from training.models import VARIANTS, build_model, model_summary

    rows = [{"name": variant.name, **model_summary(build_model(variant.config)), "description": variant.description}
            for variant in VARIANTS.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'name':<16}{'params':>9}{'train params':>14}{'MACs/window':>13}{'RF':>5}  description")
    for r in rows:
        print(f"{r['name']:<16}{r['params']:>9,}{r['params_train']:>14,}{r['macs']:>13,}{r['receptive_field']:>5}"
              f"  {r['description']}")
    print("params / MACs: classification path only (what is exported); train params include auxiliary heads.")


def _evaluate(args) -> None:
    from training.data import resolve_data_path
    from training.evaluate import evaluate_model, summary_text, write_outputs

    subjects = None
    if args.subjects:
        try:
            subjects = [int(s) for s in args.subjects.split(",") if s.strip()]
        except ValueError:
            from training.config import ConfigError

            raise ConfigError(f"--subjects {args.subjects!r}: give integer ids, e.g. 1,3,5") from None
    data = resolve_data_path(args.data)
    report = evaluate_model(args.model, data, split=args.split, subjects=subjects, backend=args.backend,
                            precision=args.precision)
    print(summary_text(report), end="")
    write_outputs(report, args.json, args.confusion)


def _check_fit_out(out: Path, resume: bool, force: bool) -> None:
    """A run folder holds one run: refuse to mix a new one into it (an interrupted re-run left the old
    model.pt beside the new run's state, and exporting it shipped the old model unnoticed)."""
    from training.checkpoint import STATE_FILE
    from training.config import ConfigError
    from training.train import RUN_FILES

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the run")
    if resume or not out.is_dir():
        return
    if force:  # the old run's files go now: an interrupted new run must not leave the old model.pt to export
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return
    if (out / STATE_FILE).exists():
        raise ConfigError(f"--out {out} holds an unfinished run: --resume continues it, --force starts over")
    if (out / "model.pt").exists():
        raise ConfigError(f"--out {out} holds a finished run (model.pt); choose a new --out, or --force to replace it")


def main(argv=None) -> int:
    from firmware_bridge.recording import RecordingError

    from edge.bundle import BundleError
    from edge.inference import InferenceError
    from edge.mount import MountError

    from training.checkpoint import CheckpointError
    from training.config import ConfigError
    from training.data import DataError
    from training.models import ModelConfigError

    args = _parser().parse_args(argv)
    try:
        if args.command == "models":
            _models(args.json)
        elif args.command == "fit":
            from training.train import fit

            config = _config(args)
            _check_fit_out(Path(args.out), args.resume, args.force)
            metrics = fit(config, args.out, resume=args.resume)
            line = f"saved {args.out}/model.pt ({metrics['selection']})"
            if "val" in metrics:
                line += f"; val accuracy {metrics['val']['accuracy']:.4f}, macro-F1 {metrics['val']['macro_f1']:.4f}"
            print(line)
        elif args.command == "cv":
            from training.cv import cross_validate

            summary = cross_validate(_config(args), args.out)
            print(f"{summary['model']}: {summary['folds']}-fold subject-wise CV  "
                  f"accuracy {summary['accuracy']['mean']:.4f} +- {summary['accuracy']['std']:.4f}  "
                  f"macro-F1 {summary['macro_f1']['mean']:.4f} +- {summary['macro_f1']['std']:.4f}  "
                  f"({args.out}/cv_summary.json)")
        elif args.command == "evaluate":
            _evaluate(args)
    except (ConfigError, ModelConfigError, CheckpointError, DataError, RecordingError, BundleError,
            InferenceError, MountError) as exc:
        print(f"har-train: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        from training.checkpoint import STATE_FILE  # already imported by the fit that was interrupted

        state = Path(args.out) / STATE_FILE if args.command == "fit" else None
        then = (f"; the last finished epoch is saved: continue with the same command and --resume "
                f"(har-train fit ... --out {args.out} --resume)") if state is not None and state.exists() else ""
        print(f"har-train: interrupted{then}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
