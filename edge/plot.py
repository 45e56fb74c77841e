"""Label timeline of a replay: predicted labels over time, and the true labels when known.

matplotlib is imported only here, only when a plot is asked for (the Pi may not need it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.postprocess import UNCERTAIN

if TYPE_CHECKING:
    from firmware_bridge.protocol import Sample


def plot_timeline(results: list[dict[str, Any]], path: str | Path, classes: Sequence[str],
                  true_labels: Sequence[str | None] | None = None, rate_hz: float = 50.0,
                  title: str = "") -> Path:
    """results: window dicts (sample_end, label, raw_label); true_labels: per-sample names or None."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    rows = list(classes) + [UNCERTAIN]
    row_of = {name: i for i, name in enumerate(rows)}
    fig, ax = plt.subplots(figsize=(14, 3.8), constrained_layout=True)
    if true_labels is not None:
        # Runs of the same true label as thick grey bars.
        start = 0
        for i in range(1, len(true_labels) + 1):
            if i == len(true_labels) or true_labels[i] != true_labels[start]:
                label = true_labels[start]
                if label in row_of:
                    ax.broken_barh([(start / rate_hz, (i - start) / rate_hz)], (row_of[label] - 0.4, 0.8),
                                   color="0.82", label="true" if "true" not in ax.get_legend_handles_labels()[1] else None)
                start = i
    ends = [r["sample_end"] / rate_hz for r in results]
    ax.plot(ends, [row_of.get(r["raw_label"], len(rows) - 1) for r in results], ".", ms=3, color="tab:orange",
            alpha=0.6, label="raw (one window)")
    ax.step(ends, [row_of.get(r["label"], len(rows) - 1) for r in results], where="post", lw=1.4,
            color="tab:blue", label="label (smoothed)")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("time (s), at each window's end")
    ax.set_title(title or "label timeline")
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_labelled_recording(samples: Sequence[Sample], labels: Sequence[str | None], path: str | Path,
                            rate_hz: float = 50.0, title: str = "") -> Path:
    """A labelled recording to check by eye: the acceleration and gyroscope axes over time, each labelled
    span shaded in its own colour and named (samples: firmware_bridge Sample list; labels: one per sample)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    values = np.array([s.values() for s in samples], dtype=np.float64)  # (n, 6) acc g, gyro rad/s
    t = np.arange(len(values)) / rate_hz
    names = sorted({label for label in labels if label is not None})
    palette = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")  # distinct hues while they last
    colours = {name: palette(i % palette.N) for i, name in enumerate(names)}
    fig, axes = plt.subplots(2, 1, figsize=(14, 5.5), sharex=True, constrained_layout=True)
    for ax, cols, unit in ((axes[0], slice(0, 3), "acc (g)"), (axes[1], slice(3, 6), "gyro (rad/s)")):
        ax.plot(t, values[:, cols], lw=0.6)
        ax.set_ylabel(unit)
        start = 0
        for i in range(1, len(labels) + 1):  # runs of one label
            if i == len(labels) or labels[i] != labels[start]:
                name = labels[start]
                if name is not None:
                    ax.axvspan(start / rate_hz, i / rate_hz, color=colours[name], alpha=0.3, lw=0)
                start = i
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[n], alpha=0.3) for n in names]
    axes[0].legend(handles, names, loc="upper right", fontsize=8, ncol=max(1, len(names) // 4))
    axes[0].set_title(title or "labelled recording (unshaded = unlabelled)")
    axes[1].set_xlabel("time (s)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
