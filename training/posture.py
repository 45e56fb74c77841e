"""Fitting the runtime's session-relative sitting / standing rule (edge/posture.py) on training wearers'
streams, and applying it to recorded streams exactly as the Pipeline's `postures` stage does.

The streams are `training.streamed.Streamed` recordings: each window's probabilities, its gravity direction
as cut and whether a checked mount reference aligned it, in stream order. Fitting reads the truth of those
streams only; `scripts/streamed_cv.py --posture` fits on the other folds' held-out wearers and scores each
fold's own (nested), and fits the shipped rule on every held-out wearer of a partition.
"""
from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from scipy.optimize import minimize

from edge.postprocess import LabelSmoother, SmoothingConfig
from edge.posture import SITTING, STANDING, PostureConfig, SessionPostures, tilt_deg

from training.streamed import Streamed, result_probs, result_truth

QUANTILES = (5.0, 10.0, 20.0)        # percent: the rule's low / high reference points
GATES_DEG = (4.0, 6.0, 8.0, 10.0, 15.0)  # spread the session must show before the rule reads a window
# The guard: the share of each end the model itself must call as the rule would. A majority only: looser guards
# (0.35, 0.2), chosen the same way, gained 0.08 pt and cost held-out seated sessions up to 1.5 pt (docs/results.md).
MIN_SHARES = (0.5,)
# A rule may not cost the training wearers' one-posture sessions more than this (fraction of their windows):
# HAPT's recordings all show both postures, everyday sessions need not.
MAX_ONE_POSTURE_COST = 0.005
REJECTED = "rejected: costs one-posture sessions"  # a candidate's entry in fit_rule's grid when that cost is too high
L2 = 1e-6  # on the two (scaled) weights: keeps the fit finite when a fold's windows separate perfectly


def truth_of(streamed: Streamed, frontend) -> np.ndarray:
    """(k,) class index 0-5 of each window of a streamed recording (-1: not inside one labelled activity)."""
    return result_truth(streamed.results, streamed.recording, frontend)


def sit_direction(streams: list[Streamed], truths: list[np.ndarray], classes) -> np.ndarray:
    """(3,) unit: the mean over recordings of the standing -> sitting change of the mean gravity direction
    (`truths`: each stream's truth_of)."""
    sit, stand = classes.index(SITTING), classes.index(STANDING)
    changes = []
    for s, truth in zip(streams, truths):
        if (truth == sit).any() and (truth == stand).any():
            change = s.gravity[truth == sit].mean(axis=0) - s.gravity[truth == stand].mean(axis=0)  # (3,)
            changes.append(change / np.linalg.norm(change))
    mean = np.mean(changes, axis=0)  # (3,)
    return mean / np.linalg.norm(mean)


def session_features(streamed: Streamed, classes, direction: np.ndarray, quantile: float, gate: float,
                     min_share: float):
    """The windows the rule reads in one recording, as the runtime sees them, in order ->
    (indices (m,), features (m, 2) = (s - low, high - s), open (m,) bool: the rule reads that window)."""
    rule = SessionPostures(PostureConfig(tuple(direction), quantile, gate, (0.0, 0.0), 0.0, min_share), tuple(classes))
    probs = result_probs(streamed.results, classes)  # (k, C)
    idx = rule.candidates(probs, streamed.trusted)  # m indices
    s = tilt_deg(streamed.gravity[idx], direction)  # m tilts, as the runtime computes them
    rows = []
    for i, tilt in zip(idx, s):
        low, high = rule.observe(tilt, bool(probs[i].argmax() == rule.sit))
        rows.append((tilt - low, high - tilt, rule.opens(low, high)))
    table = np.array(rows, dtype=np.float64).reshape(-1, 3)  # (m, 3)
    return np.array(idx, dtype=np.int64), table[:, :2], table[:, 2] > 0


def fit_weights(x: np.ndarray, sitting: np.ndarray) -> tuple[tuple[float, float], float]:
    """Binary logistic regression (m, 2) -> (weights, bias) with a small L2 on the weights."""
    scale = max(1.0, float(np.abs(x).max()))  # degrees: keep L-BFGS well conditioned

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        z = x @ theta[:2] / scale + theta[2]  # (m,)
        p = 1.0 / (1.0 + np.exp(-z))
        value = float(np.mean(np.logaddexp(0.0, z) - sitting * z) + L2 * theta[:2] @ theta[:2])
        g = p - sitting  # (m,)
        grad = np.r_[x.T @ g / scale / len(x) + 2 * L2 * theta[:2], g.mean()]
        return value, grad

    theta = minimize(loss, np.zeros(3), jac=True, method="L-BFGS-B").x
    return (float(theta[0] / scale), float(theta[1] / scale)), float(theta[2])


def apply_rule(streamed: Streamed, config: PostureConfig, classes, smoothing: SmoothingConfig,
               rises: bool = True) -> Streamed:
    """The recording as the Pipeline with this rule would have labelled it (the rule runs before the smoother,
    which restarts with each recording); `rises=False`: without the references sit <-> stand rises name."""
    rule = SessionPostures(config, tuple(classes), rises)
    logits = np.log(np.maximum(result_probs(streamed.results, classes), 1e-12))  # (k, C): argmax and swaps as on logits
    probs = np.exp(rule.decide(logits, streamed.gravity, streamed.trusted, streamed.rises))  # (k, C)
    decisions = LabelSmoother(classes, smoothing).push(probs)
    results = [r | {"label": d.label, "raw_label": d.raw_label, "confidence": d.confidence,
                    "probs": dict(zip(classes, p.tolist()))}
               for r, d, p in zip(streamed.results, decisions, probs)]
    return replace(streamed, results=results)


def label_accuracy(streams: list[Streamed], truths: list[np.ndarray], classes) -> tuple[int, int]:
    """(correct, scored) of the streams' `label`s against their truth."""
    correct = total = 0
    for s, truth in zip(streams, truths):
        scored = truth >= 0
        labels = itertools.compress([r["label"] for r in s.results], scored)
        correct += sum(label == classes[t] for label, t in zip(labels, truth[scored]))
        total += int(scored.sum())
    return correct, total


class NoRuleFitted(ValueError):
    """No candidate rule could be fitted, or every one cost the one-posture sessions too much: the model is
    better left without the stage (what the message says; `grid` has each candidate's fate)."""

    def __init__(self, message: str, grid: dict) -> None:
        super().__init__(message)
        self.grid = grid


def fit_rule(streams: list[Streamed], classes, frontend, smoothing: SmoothingConfig,
             one_posture: Sequence[Streamed] = (), shares=MIN_SHARES, rises: bool = True,
             max_one_posture_cost: float = MAX_ONE_POSTURE_COST) -> tuple[PostureConfig, dict]:
    """The rule fitted on these (training) streams: the direction from their truth, the weights by logistic
    regression for each (quantile, gate, min_share), and of those that cost the `one_posture` sessions (the same
    wearers' SITTING, or STANDING, samples alone) at most `max_one_posture_cost` of their windows, the one that
    labels the streams best (each applied with the references sit <-> stand rises name, unless `rises` is False).
    -> (config, grid: accuracy per candidate, or "rejected"). Raises NoRuleFitted when no candidate is left."""
    sit = classes.index(SITTING)
    truths = [truth_of(s, frontend) for s in streams]
    direction = sit_direction(streams, truths, classes)
    one_truths = [truth_of(s, frontend) for s in one_posture]
    one_base, one_total = label_accuracy(list(one_posture), one_truths, classes)
    grid: dict[str, object] = {}
    best: tuple[float, PostureConfig] | None = None
    for quantile, gate, share in itertools.product(QUANTILES, GATES_DEG, shares):
        name = f"q{quantile:g}/gate{gate:g}/share{share:g}"
        xs, ys = [], []
        for s, truth in zip(streams, truths):
            idx, x, reads = session_features(s, classes, direction, quantile, gate, share)
            use = reads & np.isin(truth[idx], [sit, classes.index(STANDING)])
            xs.append(x[use])
            ys.append(truth[idx][use] == sit)
        x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
        if len(x) < 10 or y.min() == y.max():
            continue
        weights, bias = fit_weights(x, y)
        config = PostureConfig(tuple(direction), quantile, gate, weights, bias, share)
        if one_total:
            ruled = [apply_rule(s, config, classes, smoothing, rises) for s in one_posture]
            if label_accuracy(ruled, one_truths, classes)[0] < one_base - max_one_posture_cost * one_total:
                grid[name] = REJECTED
                continue
        correct, total = label_accuracy([apply_rule(s, config, classes, smoothing, rises) for s in streams], truths, classes)
        grid[name] = round(correct / total, 5)
        if best is None or correct / total > best[0]:
            best = (correct / total, config)
    if best is None:
        rejected = sum(value == REJECTED for value in grid.values())
        if rejected:
            raise NoRuleFitted(f"every one of the {rejected} candidate posture rules costs these wearers' one-posture "
                               f"sessions more than {100 * max_one_posture_cost:g}% of their windows: leave this model "
                               "without the rule", grid)
        raise NoRuleFitted("no posture rule could be fitted on these streams (too few SITTING / STANDING windows, or "
                           "only one of the two, among the windows the rule would read)", grid)
    return best[1], grid
