"""Label smoothing: averaging, k-of-n voting, the uncertainty floor."""

from __future__ import annotations

import numpy as np
import pytest

from edge.frontend import CLASSES
from edge.postprocess import UNCERTAIN, LabelSmoother, SmoothingConfig, SmoothingConfigError, softmax


def one_hot_ish(indices, p=0.8):
    """Window probabilities peaked at `indices` with mass p, rest spread evenly: (k, 6)."""
    out = np.full((len(indices), 6), (1 - p) / 5)
    out[np.arange(len(indices)), indices] = p
    return out


def labels(decisions):
    return [d.label for d in decisions]


def test_averaging_removes_a_single_window_flip():
    probs = one_hot_ish([3, 3, 3, 4, 3, 3])  # SITTING with one STANDING blip
    decisions = LabelSmoother(CLASSES, SmoothingConfig("average", n=3, threshold=0.5)).push(probs)
    assert labels(decisions) == ["SITTING"] * 6
    assert [d.raw_label for d in decisions][3] == "STANDING"
    # The blip window's smoothed confidence is the mean of the last three: (0.8 + 0.8 + 0.04) / 3.
    assert decisions[3].confidence == pytest.approx((0.8 + 0.8 + 0.04) / 3)


def test_averaging_follows_a_real_change_after_a_window_or_two():
    probs = one_hot_ish([0, 0, 0, 5, 5, 5, 5])
    got = labels(LabelSmoother(CLASSES, SmoothingConfig("average", n=3, threshold=0.0)).push(probs))
    assert got == ["WALKING"] * 4 + ["LAYING"] * 3


def test_vote_k_of_n_needs_k_votes():
    probs = one_hot_ish([1, 2, 1, 2, 2, 0])
    got = labels(LabelSmoother(CLASSES, SmoothingConfig("vote", n=3, k=2, threshold=0.0)).push(probs))
    # windows: [1] -> 1 vote; [1,2] -> no class has 2; [1,2,1] -> 1; [2,1,2] -> 2; [1,2,2] -> 2; [2,2,0] -> 2
    assert got == [UNCERTAIN, UNCERTAIN, "WALKING_UPSTAIRS", "WALKING_DOWNSTAIRS", "WALKING_DOWNSTAIRS", "WALKING_DOWNSTAIRS"]


def test_low_confidence_is_uncertain():
    probs = one_hot_ish([4, 4, 4], p=0.4)
    smoother = LabelSmoother(CLASSES, SmoothingConfig("none", threshold=0.5))
    decisions = smoother.push(probs)
    assert labels(decisions) == [UNCERTAIN] * 3 and [d.raw_label for d in decisions] == ["STANDING"] * 3
    assert labels(LabelSmoother(CLASSES, SmoothingConfig("none", threshold=0.35)).push(probs)) == ["STANDING"] * 3


def test_reset_forgets_history():
    smoother = LabelSmoother(CLASSES, SmoothingConfig("average", n=5, threshold=0.0))
    smoother.push(one_hot_ish([0, 0, 0, 0]))
    smoother.reset()
    assert labels(smoother.push(one_hot_ish([5]))) == ["LAYING"]


def test_chunking_does_not_change_decisions():
    rng = np.random.default_rng(0)
    probs = softmax(rng.normal(size=(40, 6)) * 3)
    whole = LabelSmoother(CLASSES, SmoothingConfig("vote", n=4, k=2)).push(probs)
    smoother = LabelSmoother(CLASSES, SmoothingConfig("vote", n=4, k=2))
    pieces = [d for i in range(0, 40, 3) for d in smoother.push(probs[i:i + 3])]
    assert whole == pieces


@pytest.mark.parametrize("kwargs, words", [
    (dict(method="median"), "unknown"),
    (dict(n=0), "n must be >= 1"),
    (dict(method="vote", n=3, k=4), "1 <= k <= n"),
    (dict(threshold=1.5), "[0, 1]"),
])
def test_bad_settings_are_rejected_with_a_clear_message(kwargs, words):
    with pytest.raises(SmoothingConfigError, match=None) as info:
        SmoothingConfig(**kwargs)
    assert words in str(info.value)


def test_softmax_is_stable_for_extreme_logits():
    p = softmax(np.array([[1000.0, 0, 0, 0, 0, -1000.0]]))
    assert np.isfinite(p).all() and p[0, 0] == pytest.approx(1.0)


def test_a_recognised_transition_holds_the_posture_on_a_real_recording(hapt_zip):
    """User 1's first recording on the device's grid, labelled as HAPT labels it. The probabilities are those
    of the error every model makes: each sitting window reads as STANDING (0.6 against 0.3), while a window
    centred in a postural transition reads as that transition. The posture the transition names is shown."""
    from edge.postprocess import TRANSITION_POSTURE

    from training.streamed import HaptRecordings, window_classes

    recording = HaptRecordings(hapt_zip).of_user(1)[0]
    all_classes = CLASSES + tuple(TRANSITION_POSTURE)  # (12,) HAPT activity id - 1
    ends = np.arange(128, len(recording.activity) + 1, 64)  # (k,)
    truth = window_classes(recording.activity, ends, 128)  # (k,) -1: not inside one activity
    probs = np.full((len(ends), 12), 0.01)
    sitting, standing = CLASSES.index("SITTING"), CLASSES.index("STANDING")
    for i, end in enumerate(ends):
        middle = recording.activity[end - 64]
        if middle >= 7:
            probs[i, middle - 1] = 0.8  # a transition seen as one
        elif truth[i] == sitting:
            probs[i, [standing, sitting]] = 0.6, 0.3  # sitting misread
        elif middle >= 1:
            probs[i, middle - 1] = 0.8
        else:  # unlabelled stretches (between the walks): standing about
            probs[i, standing] = 0.8
    probs /= probs.sum(axis=1, keepdims=True)
    smoothing = SmoothingConfig("none", n=1, threshold=0.0)
    held = LabelSmoother(all_classes, smoothing).push(probs)
    plain = LabelSmoother(CLASSES, smoothing).push(probs[:, :6] / probs[:, :6].sum(axis=1, keepdims=True))

    scored_sitting = truth == sitting
    assert scored_sitting.sum() > 20
    assert all(d.label == "STANDING" for d, s in zip(plain, scored_sitting) if s)  # the error, uncorrected
    # Every sitting bout of this recording follows STAND_TO_SIT or LIE_TO_SIT: all of it is shown SITTING.
    assert all(d.label == "SITTING" for d, s in zip(held, scored_sitting) if s)
    assert all(d.raw_label == "STANDING" for d, s in zip(held, scored_sitting) if s)  # raw_label: the window's own
    # The transitions seen, in order, are the recording's own (one name per run of transition windows).
    seen = [d.transition for d in held if d.transition]
    runs = [name for i, name in enumerate(seen) if i == 0 or seen[i - 1] != name]
    labelled = [all_classes[a - 1] for a in recording.activity[np.r_[0, np.flatnonzero(np.diff(recording.activity)) + 1]]
                if a >= 7]
    assert runs == labelled
    # Walking and the stairs clear the posture: their windows are shown as the model reads them.
    moving = np.isin(truth, [0, 1, 2])
    assert all(d.label == CLASSES[t] for d, t, m in zip(held, truth, moving) if m)
