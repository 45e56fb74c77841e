"""Scoring streaming labels against a recording's true per-sample labels (replay, demo, enrolment).

A window is scored only when all its samples share one true label (the windows training's accuracy is
measured on); windows over a transition, unlabelled samples or past the labels' end are not scored.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def window_truth(labels: Sequence[str | None] | None, ends: Iterable[int], size: int = 128) -> list[str | None]:
    """The true class of each window: the label all its samples share, else None
    (a transition, unlabelled samples, or past the end of the labels)."""
    truth: list[str | None] = []
    n = len(labels) if labels is not None else 0
    for end in ends:
        start = end - size
        if labels is None or start < 0 or end > n:
            truth.append(None)
            continue
        first = labels[start]
        same = first is not None and all(labels[i] == first for i in range(start, end))
        truth.append(first if same else None)
    return truth


def truth_summary(results: Iterable[dict[str, Any]], labels: Sequence[str | None] | None, window: int = 128,
                  truth: Sequence[str | None] | None = None, classes: Sequence[str] | None = None) -> dict[str, Any]:
    """Accuracy of streaming results against per-sample true labels, on the windows that lie
    inside one labelled activity. `truth`: each window's true class when the caller has it already
    (edge.replay derives it from label codes); `results` is read once, so a generator keeps nothing.
    `classes`: the model's; a window labelled with anything else (a typo, another model's class) cannot be
    right and is not scored: "not_model_classes" counts those windows per label."""
    if truth is None:
        results = list(results)
        truth = window_truth(labels, [r["sample_end"] for r in results], window)
    scored = raw_ok = smooth_ok = uncertain = 0
    others: dict[str, int] = {}
    for r, t in zip(results, truth):
        if t is None:
            continue
        if classes is not None and t not in classes:
            others[t] = others.get(t, 0) + 1
            continue
        scored += 1
        raw_ok += r["raw_label"] == t
        smooth_ok += r["label"] == t
        uncertain += r["label"] == "uncertain"
    extra = {"not_model_classes": others} if others else {}
    if not scored:
        return {"scored_windows": 0, **extra}
    return extra | {
        "scored_windows": scored,
        "raw_correct": raw_ok,
        "smoothed_correct": smooth_ok,
        "raw_accuracy": raw_ok / scored,
        "smoothed_accuracy": smooth_ok / scored,
        "smoothed_accuracy_when_certain": smooth_ok / max(1, scored - uncertain),
        "uncertain": uncertain,
    }
