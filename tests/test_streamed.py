"""The honest headline protocol (training/streamed.py) on a small real subset: a cross-validation of four
HAPT users, each scored once, streamed through edge.pipeline.Pipeline by the one fold model that never saw
them, whose kept epoch was chosen on nothing they did."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from edge.frontend import FrontEnd
from edge.mount import MountCalibration, gravity_directions
from edge.postprocess import SmoothingConfig
from edge.scoring import window_truth

from training.config import load_train_config
from training.cv import cross_validate
from training.streamed import (
    HaptRecordings,
    bouts,
    pooled,
    score_user,
    stream_recording,
    stream_run,
    window_classes,
)

pytestmark = pytest.mark.slow  # trains fold models and streams recordings (tens of seconds): `make test-fast` leaves these out

torch.set_num_threads(1)
USERS = [1, 3, 5, 6]


@pytest.fixture(scope="module")
def run(hapt_zip, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    config = load_train_config(None, {"model": "tcn_tiny", "epochs": 3, "batch_size": 32, "max_batches_per_epoch": 4,
                                      "warmup_epochs": 1, "progress": False, "folds": 2, "subjects": USERS})
    return out, cross_validate(config, out)


@pytest.fixture(scope="module")
def recordings(hapt_zip):
    return HaptRecordings(hapt_zip)


def test_the_kept_epoch_is_the_last_one_not_the_best_on_the_scored_users(run):
    _, summary = run
    for fold in summary["per_fold"]:
        assert fold["best_epoch"] == 3  # select_epoch=last: the held-out users chose nothing
    import json
    for k in range(2):
        metrics = json.loads((run[0] / f"fold_{k}" / "metrics.json").read_text())
        assert metrics["selection"].startswith("select_epoch=last")
        assert len(metrics["history"]) == 3 and "val_accuracy" in metrics["history"][0]  # scored, not chosen


def test_every_user_is_streamed_once_by_the_model_that_never_saw_them(run, recordings):
    out, summary = run
    streams = stream_run(out, recordings, log=lambda m: None)
    assert sorted(user for _, user, _, _ in streams) == USERS  # each once
    for fold, user, streamed, _model in streams:
        assert user in summary["per_fold"][fold]["val_subjects"]
        assert [s.recording.experiment for s in streamed] == sorted(s.recording.experiment for s in streamed)
        assert all(s.recording.user == user for s in streamed) and len(streamed) == 2
    users = [score_user(k, u, st, m) for k, u, st, m in streams]
    for u in users:
        assert u["windows"] > 250 and 0 <= u["label_correct"] <= u["windows"]
    total = pooled(users)
    assert total["windows"] == sum(u["windows"] for u in users)
    assert total["worst_user"] in USERS and total["median_lag_s"] > 0


def test_the_first_recording_starts_uncalibrated_and_the_calibration_carries_on(run, recordings):
    out, _ = run
    streams = stream_run(out, recordings, log=lambda m: None)
    for _, _, streamed, _ in streams:
        first, second = streamed
        assert any("not calibrated yet" in n for n in first.notes)
        assert any("mount calibrated" in n for n in first.notes)
        assert not any("not calibrated yet" in n for n in second.notes)  # carried in


def test_each_windows_gravity_is_recorded_with_or_without_a_mount_stage(run, recordings):
    """The posture rule is fitted on the recorded gravity and rises: they must be each window's, aligned model or not
    (user 1's first recording: two sit <-> stand transitions)."""
    out, _ = run
    _, user, streamed, model = stream_run(out, recordings, log=lambda m: None)[0]
    recording = streamed[0].recording
    assert (user, recording.experiment) == (1, 1)
    windows, _ = FrontEnd(model.frontend_config, model.filters).push(recording.raw)  # (k, 128, 9)
    expected = gravity_directions(windows)  # (k, 3)
    assert model.mount is not None  # an aligned model, and the same model without its mount stage
    for m, calibration in ((model, MountCalibration(model.mount)),
                           (replace(model, mount=None), None)):
        s = stream_recording(m, recording, SmoothingConfig(), calibration, [])
        assert s.gravity.shape == expected.shape and np.allclose(s.gravity, expected, atol=1e-6)
        assert not s.trusted[:20].any()  # nothing is trusted before a walk has checked a reference
        # ... and so are the rises, whether the model has a rule or not: what the pipeline's tracker says
        assert len(s.rises) == len(expected) and sum(r.rise is not None and r.rise.sit_stand for r in s.rises) == 2


def test_scored_windows_are_those_inside_one_labelled_activity(recordings):
    recording = recordings.of_user(1)[0]
    ends = np.arange(128, len(recording.activity) + 1, 64)  # the device's grid
    names = [None, "WALKING", "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "SITTING", "STANDING", "LAYING"] + ["T"] * 6
    labels = [names[a] if a else None for a in recording.activity]
    truth = window_truth(labels, ends)  # the runtime's own definition (transitions as one class "T")
    mine = window_classes(recording.activity, ends, 128)
    expected = [-1 if t in (None, "T") else names.index(t) - 1 for t in truth]
    assert mine.tolist() == expected and (mine >= 0).sum() > 150
    timed = bouts(recording.activity, 500)
    assert timed and all(e - s >= 500 and 0 <= c < 6 for s, e, c in timed)


def test_resmoothing_recorded_probabilities_matches_streaming_with_that_smoother(run, recordings):
    out, _ = run
    no_floor = SmoothingConfig(threshold=0.0)
    streamed_plain = stream_run(out, recordings, log=lambda m: None)
    streamed_other = stream_run(out, recordings, smoothing=no_floor, log=lambda m: None)
    for (k, u, a, m), (_, _, b, _) in zip(streamed_plain, streamed_other):
        assert score_user(k, u, a, m, no_floor)["label_correct"] == score_user(k, u, b, m)["label_correct"]


def test_the_errors_are_broken_down_by_where_the_mount_calibration_stood(run, recordings):
    out, _ = run
    streams = stream_run(out, recordings, log=lambda m: None)
    users = [score_user(k, u, st, m) for k, u, st, m in streams]
    for (_, _, streamed, _), user in zip(streams, users):
        first, second = streamed
        # HAPT's static postures come before any walking: each recording starts without a checked reference.
        assert first.states[0] == "uncalibrated" and first.states[-1] == "checked"
        assert second.states[0] == "carried, unchecked" and "uncalibrated" not in second.states
        assert len(first.states) == len(first.results)
        tallies = user["by_mount_state"]
        assert sum(n for n, _ in tallies.values()) == user["windows"]
        assert sum(c for _, c in tallies.values()) == user["label_correct"]
    total = pooled(users)["by_mount_state"]
    assert sum(n for n, _ in total.values()) == pooled(users)["windows"]


def test_a_fold_whose_every_rule_costs_one_posture_sessions_runs_without_the_rule(bundle_dir, recordings, monkeypatch):
    """When no candidate posture rule keeps the one-posture sessions (here: a cost budget no rule can meet), the fit
    says so, naming them, instead of a traceback, and the nested score runs that fold without the stage, as a bundle
    without a rule runs. (The shipped model, its own rule off, streams the four users as two folds: a model that
    reads sitting and standing, so that rules can be fitted at all; what it scores is not the point here.)"""
    import functools
    import sys
    from pathlib import Path

    from edge.model import load_model

    from training.posture import REJECTED, NoRuleFitted, fit_rule
    from training.streamed import stream_user

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
    import streamed_cv

    smoothing = SmoothingConfig()
    model = replace(load_model(bundle_dir, "tflite", "fp32"), posture=None)
    streams = [(fold, user, stream_user(model, recordings.of_user(user), smoothing), model)
               for fold, user in ((0, 1), (0, 3), (1, 5), (1, 6))]
    sessions = streamed_cv.one_posture_streams(streams, recordings, smoothing)
    training = [s for _, _, streamed, _ in streams for s in streamed]
    one = [s for by in sessions.values() for st in by.values() for s in st]
    with pytest.raises(NoRuleFitted, match="one-posture sessions") as raised:
        fit_rule(training, model.classes, model.frontend_config, smoothing, one, max_one_posture_cost=-1.0)
    assert raised.value.grid and all(v == REJECTED for v in raised.value.grid.values())

    monkeypatch.setattr(streamed_cv, "fit_rule", functools.partial(fit_rule, max_one_posture_cost=-1.0))
    users, details, one_posture = streamed_cv.nested_posture(streams, sessions, smoothing, guarded=True)
    assert all(d["config"] is None and "one-posture" in d["no_rule"] for d in details.values())
    plain = {u["user"]: u for u in (score_user(k, u, st, m) for k, u, st, m in streams)}
    assert {u["user"]: u["label_correct"] for u in users} == {u: p["label_correct"] for u, p in plain.items()}
    assert all(without == with_rule for _, without, with_rule in one_posture.values())
