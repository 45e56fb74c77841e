"""Summaries of measured durations (latency lines, benchmark rows)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def stats_ms(seconds: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Median, p90, p99, mean, max and the five slowest of durations given in seconds, in ms."""
    a = np.asarray(seconds) * 1e3
    return {"median_ms": float(np.median(a)), "p90_ms": float(np.percentile(a, 90)), "p99_ms": float(np.percentile(a, 99)),
            "mean_ms": float(a.mean()), "max_ms": float(a.max()), "n": int(len(a)),
            "slowest_ms": [round(float(v), 3) for v in np.sort(a)[-5:][::-1]]}
