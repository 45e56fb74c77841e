"""The main loop of `har-edge run | replay | record | demo`, and the counters line it prints.

    for each item the source gives:                 read (edge/sources.py)
        results = pipeline.process(item)            decode .. post-process (edge/pipeline.py)
        every sink <- results, then status events   emit (edge/sinks.py)
        a live source <- when the next window is due   pace (edge/sources.py: reads in batches until then;
                                                    the samples held so far are filtered first; just before
                                                    the window-completing frame, the pipeline rehearses it,
                                                    and the sinks encode the rehearsal's result)
        every report_every_s: counters -> stderr and the sinks that publish them
    until the source ends, stop() says so, or SIGINT: close the source, give the sinks the last counters,
    close (flush) them, print the final counters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from firmware_bridge.stopping import StopSignals

from edge.messages import say as say_on_stderr
from edge.pipeline import Pipeline
from edge.sinks import Sink


def format_counters(counters: dict[str, Any]) -> str:
    gaps, link = counters["gaps"], counters["link"]
    parts = [
        f"windows {counters['windows']}",
        f"samples {gaps['samples']}",
        f"lost {gaps['lost_samples']}",
        f"lost in outages {gaps['outage_samples']}",
        f"out of order {gaps['out_of_order']}",
        f"interpolated {gaps['interpolated_samples']} ({gaps['short_gaps']} gaps)",
        f"long gaps {gaps['long_gaps']}",
        f"duplicates {gaps['duplicates'] + counters.get('decoder', {}).get('duplicates', 0)}",
        f"invalid {gaps['invalid_samples']}",
        f"device restarts {gaps['device_restarts']}",
        f"reconnects {link['reconnects']}",
    ]
    if "decoder" in counters:
        dec = counters["decoder"]
        parts.append(f"crc errors {dec.get('crc_errors', 0)}")
        parts.append(f"malformed {dec.get('malformed', 0) + dec.get('bad_lines', 0)}")
        parts.append(f"garbage bytes {dec.get('garbage_bytes', 0)}")
    rate = counters["rate_hz"]
    parts.append("rate " + ("measuring" if rate is None else f"{rate:.2f} Hz"))
    if "mount" in counters:
        mount = counters["mount"]
        parts.append("mount " + ("calibrated" if mount["calibrated"] else "calibrating")
                     + f" ({mount['moving_windows']} moving windows)")
    if "postures" in counters:
        postures = counters["postures"]
        parts.append(f"posture rule read {postures['read']} (changed {postures['swapped']}, "
                     f"sit/stand transitions {postures.get('rises', 0)})")
    return ", ".join(parts)


@dataclass
class LoopReport:
    counters: dict[str, Any]
    interrupted: bool = False
    results: list[dict[str, Any]] = field(default_factory=list)


def emit(sinks: Sequence[Sink], results: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """Window results, then the status events among them, to every sink (a sink may ignore status events)."""
    for result in results:
        for sink in sinks:
            sink.emit(result)
    for event in events:
        for sink in sinks:
            emit_status = getattr(sink, "emit_status", None)
            if emit_status is not None:
                emit_status(event)


def rehearsal_with_outputs(rehearse: Callable[[], list[dict[str, Any]]] | None,
                           warmers: Sequence[Callable[[dict[str, Any]], None]]) -> Callable[[], None] | None:
    """The pipeline's rehearsal of the next window, then its throwaway results through `warmers`, the sinks'
    `rehearse` methods (the encoding a result takes on its way out; nothing is written or sent). Why: the JSON
    encoding of the window's result took about 50 us on the way out after the process had slept between windows,
    against 5 us warm (docs/results.md, "Ninth pass")."""
    if rehearse is None:
        return None

    def rehearse_all() -> None:
        for result in rehearse():
            for warm in warmers:
                warm(result)
    return rehearse_all


def publish_counters(sinks: Sequence[Sink], counters: dict[str, Any]) -> None:
    """Sinks that publish the counters too (MQTT, the web page) have a `counters` method."""
    for sink in sinks:
        publish = getattr(sink, "counters", None)
        if publish is not None:
            publish(counters)


class CounterReports:
    """The counters line every `every_s` seconds (None or 0: never), on stderr and to the sinks."""

    def __init__(self, pipeline: Pipeline, sinks: Sequence[Sink], say: Callable[[str], None],
                 every_s: float | None) -> None:
        self.pipeline, self.sinks, self.say, self.every_s = pipeline, sinks, say, every_s
        self._last = time.perf_counter()

    def when_due(self) -> None:
        if self.every_s and time.perf_counter() - self._last >= self.every_s:
            counters = self.pipeline.counters()
            self.say("counters: " + format_counters(counters))
            publish_counters(self.sinks, counters)
            self._last = time.perf_counter()


def run_loop(source: Iterable[Any], pipeline: Pipeline, sinks: Sequence[Sink], report_every_s: float | None = 10.0,
             report: Callable[[str], None] | None = None, stop: Callable[[], bool] | None = None,
             prewarm: bool = True) -> LoopReport:
    """The main loop of the module docstring: read -> process -> emit, until the source ends, `stop()` says
    so, or SIGINT (KeyboardInterrupt): outputs are flushed and counters printed. prewarm: let a live source
    run `pipeline.rehearsal()` just before each window-completing frame (False: less CPU, later labels)."""
    say = report or say_on_stderr
    reports = CounterReports(pipeline, sinks, say, report_every_s)
    interrupted = False
    pace = getattr(source, "hold_until", None)  # SerialSource: no need to wake per frame before a window is due
    warmers = [warm for sink in sinks if (warm := getattr(sink, "rehearse", None)) is not None]  # once, not per window
    try:
        for item in source:  # read
            results = pipeline.process(item)  # decode, gaps, filter, window, align, normalize, infer, smooth
            emit(sinks, results, pipeline.status.take())
            if pace is not None:
                pipeline.filter_held()  # while the source waits: the window-completing sample is left alone
                # When the next frame completes a window: a rehearsal of it, for the source to run just before.
                rehearse = rehearsal_with_outputs(pipeline.rehearsal(), warmers) if prewarm else None
                pace(pipeline.next_window_due(), rehearse)
            reports.when_due()
            if stop is not None and stop():
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        StopSignals.shutdown_begins()  # a signal from here on must not cut the flush, the saves, the counters
        close = getattr(source, "close", None)
        if close is not None:
            close()
        publish_counters(sinks, pipeline.counters())
        for sink in sinks:
            sink.close()
    counters = pipeline.counters()
    say(("interrupted; " if interrupted else "") + "final counters: " + format_counters(counters))
    return LoopReport(counters, interrupted)
