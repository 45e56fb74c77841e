"""Where window results go: JSON lines (a file or stdout) and a live terminal line."""

from __future__ import annotations

import json
import sys
from typing import IO, Protocol


class SinkError(OSError):
    """An output that cannot be opened."""


class Sink(Protocol):
    def emit(self, result: dict) -> None: ...
    def close(self) -> None: ...
    # Optional: `counters(counters: dict)`, called by run_loop at every counters report and at the end.


def result_json(result: dict) -> str:
    """A window result as one compact JSON object: a --jsonl line, an MQTT window message."""
    return json.dumps(result, separators=(",", ":"))


class JsonlSink:
    """One JSON object per line; `-` is stdout. Every line is flushed (live consumers)."""

    def __init__(self, path: str, flush_every: int = 1, append: bool = False):
        self.path = path
        self.flush_every = max(1, flush_every)
        self._count = 0
        if path == "-":
            self._stream: IO[str] = sys.stdout
            self._owned = False
        else:
            try:
                self._stream = open(path, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"cannot write JSON lines to {path!r}: {exc.strerror}; choose a writable path or '-' for stdout") from None
            self._owned = True

    def emit(self, result: dict) -> None:
        self._stream.write(result_json(result) + "\n")
        self._count += 1
        if self._count % self.flush_every == 0:
            self._stream.flush()

    def close(self) -> None:
        try:
            self._stream.flush()
        finally:
            if self._owned:
                self._stream.close()


class TerminalSink:
    """A live line per label: on a terminal the current line is rewritten in place and a new
    line starts whenever the label changes; elsewhere one line per label change."""

    def __init__(self, stream: IO[str] | None = None, rate_hz: float = 50.0):
        self.stream = stream if stream is not None else sys.stdout
        self.rate_hz = rate_hz
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._label: str | None = None
        self._since: int | None = None

    def format(self, result: dict) -> str:
        seconds = result["sample_end"] / self.rate_hz
        since = (self._since or 0) / self.rate_hz
        minutes, sec = divmod(seconds, 60)
        bar = "#" * int(round(10 * result["confidence"]))
        return (
            f"{int(minutes):4d}:{sec:05.2f}  {result['label']:<18s} {result['confidence']:5.2f} {bar:<10s}"
            f"  raw {result['raw_label']:<18s} since {since:7.1f} s"
        )

    def emit(self, result: dict) -> None:
        changed = result["label"] != self._label
        if changed:
            first = self._label is None
            self._label, self._since = result["label"], result["sample_end"]
        line = self.format(result)
        if self.tty:
            # Keep the finished label's line; rewrite the current one in place.
            self.stream.write(("\n" if changed and not first else "") + "\r" + line + "\x1b[K")
            self.stream.flush()
        elif changed:
            self.stream.write(line + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty and self._label is not None:
            self.stream.write("\n")
        self.stream.flush()


class MemorySink:
    """Keeps results in a list (tests, replay summaries, plots)."""

    def __init__(self) -> None:
        self.results: list[dict] = []

    def emit(self, result: dict) -> None:
        self.results.append(result)

    def close(self) -> None:
        pass
