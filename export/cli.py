"""`har-export CHECKPOINT --out DIR`: checkpoint -> folded ONNX / TFLite fp32 + int8 -> bundle + table.

Steps (each checked, each failure an ExportError naming what and what to do):
 1. load the checkpoint; take its classification path only (no physics head, no decoder);
 2. load real windows with the checkpoint's own front-end and normalization: calibration windows
    from its training subjects (stratified over classes), evaluation windows from its validation
    subjects;
 3. fold BN (export.fuse), check folded == unfolded on real windows (max |d logit| <= 1e-4); add the
    penultimate features as a second output (export.features), checked the same way;
 4. ONNX fp32 (dynamic batch) -> ONNX int8 (onnxruntime QDQ per-channel);
    ONNX fp32 static batch 1 -> onnx2tf SavedModel -> TFLite fp32 and full-integer int8;
 5. bundle.json (validated by the edge loader), then the per-format table, printed and stored.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from export import ExportError

DEFAULT_CALIBRATION = 600


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def stratified_sample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Indices of about n windows, as equal per class as the data allows, in a seeded random order."""
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    per_class = max(1, n // len(classes))
    picked = [rng.permutation(np.flatnonzero(y == c))[:per_class] for c in classes]
    return np.sort(np.concatenate(picked))


def load_windows(ckpt: dict, data_path: Path, n_calibration: int, max_eval: int | None):
    """-> (calibration (n,128,9), eval windows (k,128,9), eval labels (k,), eval description); normalized."""
    from edge.frontend import FrontEndConfig

    from training.data import DataError, checkpoint_inputs
    from training.datasets import load_dataset

    train_subjects = [int(s) for s in ckpt["subjects"].get("train", [])]
    val_subjects = [int(s) for s in ckpt["subjects"].get("val", [])]
    try:
        frontend = FrontEndConfig.from_dict(ckpt["frontend"])
        windows = load_dataset(data_path, frontend, classes=tuple(ckpt["classes"]),
                               subjects=sorted(set(train_subjects + val_subjects)) or None)
    except (DataError, OSError, ValueError) as e:
        raise ExportError(f"cannot read calibration/validation windows from {data_path}: {e} "
                          "(pass the data set the checkpoint was trained on with --data)") from None
    X = checkpoint_inputs(windows, ckpt)   # (N, 128, 9) mount-aligned per subject if trained so, normalized
    train_mask = np.isin(windows.subject, train_subjects) if train_subjects else np.ones(len(X), bool)
    val_mask = np.isin(windows.subject, val_subjects) if val_subjects else np.zeros(len(X), bool)
    if not train_mask.any():
        raise ExportError(f"{data_path} has no windows of the checkpoint's training subjects {train_subjects}")
    train_idx = np.flatnonzero(train_mask)
    calibration = X[train_idx[stratified_sample(windows.y[train_idx], n_calibration, seed=0)]]
    if val_mask.any():
        eval_idx = np.flatnonzero(val_mask)
        description = f"validation subjects {val_subjects} (held out from training)"
    else:  # documented fallback: no held-out subjects in the checkpoint
        eval_idx = train_idx[stratified_sample(windows.y[train_idx], max_eval or 1200, seed=1)]
        description = "training subjects (the checkpoint has no validation subjects): NOT held out"
    if max_eval and len(eval_idx) > max_eval:
        eval_idx = np.sort(np.random.default_rng(2).permutation(eval_idx)[:max_eval])
    return calibration, X[eval_idx], windows.y[eval_idx], description


HAPT_NOTICE = ("derived from the HAPT / UCI-HAR data set (Reyes-Ortiz et al., Neurocomputing 171 (2016) 754-767): "
               "cite it; the data set's licence prohibits commercial use (see NOTICE)")
OWN_DATA_NOTICE = "trained on one's own recordings: no data-set licence restriction comes with them from this project"


def training_data(ckpt: dict) -> dict:
    """bundle.json's `training_data`: what the weights were trained on and the terms that come with it, so
    nobody ships HAPT-derived weights commercially by mistake."""
    from training.data import DataError, resolve_data_path
    from training.datasets import dataset_kind

    try:
        kind = dataset_kind(resolve_data_path(ckpt["train_config"].get("data")))
    except DataError:
        kind = "unknown"
    notice = OWN_DATA_NOTICE if kind == "recordings" else HAPT_NOTICE if kind in ("hapt", "uci") else \
        "the training data could not be identified at export; check its licence before shipping these weights"
    return {"kind": kind, "notice": notice}


def run_export(checkpoint: str | Path, out_dir: str | Path, data: str | Path | None = None,
               n_calibration: int = DEFAULT_CALIBRATION, max_eval: int | None = None, runs: int = 200,
               force: bool = False, windows=None) -> dict:
    """The whole export; returns {"bundle": Bundle, "rows": table rows, "misses": [...]}.

    `windows` = (calibration, eval_X, eval_y, description) skips reading the data (tests)."""
    import torch

    from training.checkpoint import CheckpointError, load_checkpoint

    from export.evaluate import format_table
    from export.features import LogitsAndFeatures, check_features
    from export.fuse import check_fusion, fuse_model

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    checkpoint, out = Path(checkpoint), Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder for the bundle (a new one, or an old bundle with --force)")
    if out.exists() and any(out.iterdir()) and not force:
        raise ExportError(f"output directory {out} is not empty; choose a new --out or pass --force to replace it")
    if not out.parent.is_dir():
        out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        model, ckpt = load_checkpoint(checkpoint)
    except CheckpointError as e:
        raise ExportError(str(e)) from None
    if len(ckpt["channels"]) != 9 or len(ckpt["norm"]["mean"]) != len(ckpt["channels"]):
        raise ExportError(f"checkpoint {checkpoint}: channels/normalization do not describe 9 channels")
    classifier = model.classifier_module().eval()
    _log(f"[1/5] {checkpoint}: {ckpt['model_name']}, classes {ckpt['classes']}")

    if windows is None:
        from training.data import resolve_data_path

        # The data set the checkpoint was trained on (its train_config "data"), unless --data names another.
        data_path = resolve_data_path(data if data is not None else ckpt["train_config"].get("data"))
        windows = load_windows(ckpt, data_path, n_calibration, max_eval)
    calibration, eval_X, eval_y, eval_description = windows
    _log(f"[2/5] {len(calibration)} calibration windows (training subjects), {len(eval_X)} evaluation "
         f"windows: {eval_description}")

    fused, fusion = fuse_model(classifier)
    fusion["max_abs_logit_diff"] = check_fusion(classifier, fused, eval_X[:512])
    with_features = LogitsAndFeatures(fused, len(ckpt["classes"]))
    fusion["features_max_abs_logit_diff"] = check_features(fused, with_features, eval_X[:512])
    _log(f"[3/5] BatchNorm folded: {fusion}; features output: {with_features.n_features} values per window")

    # The bundle is built in a sibling folder and swapped in whole at the end: an export that fails or is
    # interrupted (Ctrl-C during the TensorFlow import, a converter error) leaves the old bundle as it was.
    final, out = out, Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out, 0o777 & ~umask)  # mkdtemp's 0700 would hide the bundle from the service's user
    try:
        _, rows, misses = _write_models_and_bundle(out, with_features, calibration, eval_X, eval_y, ckpt,
                                                        checkpoint, fusion, eval_description, runs)
        _swap_into_place(out, final)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    from edge.bundle import load_bundle

    bundle = load_bundle(final)
    table = format_table(rows)
    print(table)
    for miss in misses:
        print(f"WARNING: {miss}")
    _log(f"[5/5] bundle {final} written and validated in {time.perf_counter() - started:.0f} s")
    return {"bundle": bundle, "rows": rows, "misses": misses, "table": table}


def _swap_into_place(staged: Path, final: Path) -> None:
    """Replace `final` (absent, empty, or an old bundle under --force) with the finished `staged` folder."""
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
        os.replace(final, old / final.name)
    os.replace(staged, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_models_and_bundle(out: Path, with_features, calibration, eval_X, eval_y, ckpt: dict, checkpoint: Path,
                             fusion: dict, eval_description: str, runs: int):
    """Steps 4 and 5 into `out`: the four model files, bundle.json, the per-format figures -> (bundle, rows, misses)."""
    from edge.bundle import sha256_file
    from edge.frontend import CHANNEL_UNITS

    from export.bundle_writer import MODEL_FILES, write_bundle
    from export.evaluate import check_targets, evaluate_formats
    from export.onnx_export import export_onnx
    from export.quantize import quantize_onnx_int8
    from export.tflite_export import export_tflite

    window, n_channels = eval_X.shape[1:]
    with tempfile.TemporaryDirectory(prefix="har-export-") as tmp:
        export_onnx(with_features, out / MODEL_FILES["onnx-fp32"], window, n_channels, dynamic_batch=True)
        quantize_onnx_int8(out / MODEL_FILES["onnx-fp32"], out / MODEL_FILES["onnx-int8"], calibration)
        batch1 = export_onnx(with_features, Path(tmp) / "model.batch1.onnx", window, n_channels, dynamic_batch=False)
        export_tflite(batch1, out / MODEL_FILES["tflite-fp32"], out / MODEL_FILES["tflite-int8"], calibration,
                      work_dir=tmp)
    _log(f"[4/5] wrote {', '.join(MODEL_FILES.values())}")

    bundle_args = dict(
        classes=ckpt["classes"], channels=ckpt["channels"], channel_units=list(CHANNEL_UNITS),
        mean=ckpt["norm"]["mean"], std=ckpt["norm"]["std"], frontend=ckpt["frontend"], mount=ckpt.get("mount"),
        training_data=training_data(ckpt),
        source_checkpoint={"file": checkpoint.name, "sha256": sha256_file(checkpoint),
                           "model_name": ckpt["model_name"], "model_config": ckpt["model_config"],
                           "subjects": ckpt["subjects"]},
        export_info={"tool": "har-export", "onnx_opset": 20, "fusion": fusion,
                     "calibration_windows": int(len(calibration)), "evaluation": eval_description,
                     "tflite_converter": "onnx2tf (ONNX -> SavedModel) + tf.lite.TFLiteConverter",
                     "onnx_int8": "onnxruntime quantize_static QDQ, per-channel int8 weights, int8 activations"},
    )
    bundle = write_bundle(out, **bundle_args)
    rows = evaluate_formats(with_features, bundle, eval_X, eval_y, runs=runs)
    misses = check_targets(rows)
    metrics = {"evaluation": eval_description, "latency": "batch 1, 1 thread, milliseconds",
               "formats": rows, "targets_missed": misses}
    bundle = write_bundle(out, metrics=metrics, **bundle_args)
    return bundle, rows, misses


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="har-export", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", help="model.pt written by `har-train fit`")
    p.add_argument("--out", required=True, help="bundle directory to write (must be new or empty; see --force)")
    p.add_argument("--data", default=None,
                   help="data set for calibration and validation windows (default: the one the checkpoint was "
                        "trained on, its train_config 'data'; empty there = the HAPT zip of the shared data)")
    p.add_argument("--calibration-windows", type=int, default=DEFAULT_CALIBRATION,
                   help="real training windows used to calibrate int8 (stratified over classes; default %(default)s)")
    p.add_argument("--max-eval", type=int, default=None, help="at most this many evaluation windows (default: all)")
    p.add_argument("--runs", type=int, default=200, help="timed calls per format for the latency figures")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out directory")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.calibration_windows < 16:
        print("har-export: error: --calibration-windows must be at least 16", file=sys.stderr)
        return 2
    try:
        result = run_export(args.checkpoint, args.out, data=args.data, n_calibration=args.calibration_windows,
                            max_eval=args.max_eval, runs=args.runs, force=args.force)
    except (ExportError, ValueError, OSError) as e:
        print(f"har-export: error: {e}", file=sys.stderr)
        return 2  # as har-train and har-edge: a problem the user can fix
    except KeyboardInterrupt:
        print(f"har-export: interrupted; {args.out} was left as it was (the new bundle is written elsewhere and "
              "moved into place only when complete)", file=sys.stderr)
        return 130
    print(json.dumps({"bundle": str(result["bundle"].path), "targets_missed": result["misses"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
