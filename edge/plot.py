"""Label timeline of a replay: predicted labels over time, and the true labels when known.

matplotlib is imported only here, only when a plot is asked for (the Pi may not need it).
"""

from __future__ import annotations

from pathlib import Path

from edge.postprocess import UNCERTAIN


def plot_timeline(results: list[dict], path: str | Path, classes, true_labels=None, rate_hz: float = 50.0,
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
