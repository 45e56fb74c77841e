"""Where results go: JSON lines (a file or stdout), a live terminal line, a recording on disk.

Window results (`emit`) and status events (`emit_status`, edge/status.py) go to every sink; a
sink without `emit_status` ignores status events. `RecordingSink` is fed the decoded samples (or
the raw bytes) by the pipeline's decode stage (`Pipeline(recorder=...)`), not window results.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from firmware_bridge.recording import RecordingError, RecordingWriter


class SinkError(OSError):
    """An output that cannot be opened."""


class Sink(Protocol):
    def emit(self, result: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    # Optional: `counters(counters: dict)`, called by run_loop at every counters report and at the end.
    # Optional: `emit_status(event: dict)`, status events (absent = ignored).
    # Optional: `rehearse(result: dict)`, a live rehearsal's throwaway result (edge/loop.py): take the path a result
    # takes out (its encoding), write nothing.


def result_json(result: dict[str, Any]) -> str:
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
                glue = append and _ends_mid_line(path)
                self._stream = open(path, "a" if append else "w", encoding="utf-8")
            except OSError as exc:
                raise SinkError(f"cannot write JSON lines to {path!r}: {exc.strerror}; choose a writable path or '-' for stdout") from None
            if glue:  # a previous run was killed mid-line: start on a fresh line, not glued to the partial one
                self._stream.write("\n")
            self._owned = True

    def emit_status(self, event: dict[str, Any]) -> None:
        self.emit(event)

    def rehearse(self, result: dict[str, Any]) -> None:
        result_json(result)  # encoded and dropped: only the code and data of the encoding are wanted, warm

    def emit(self, result: dict[str, Any]) -> None:
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
    """A live line per label change: on a terminal the current line is rewritten in place (time,
    confidence) and a new line starts whenever the label changes; elsewhere (a pipe, the journal)
    only the line of each change is printed. The README says the same."""

    def __init__(self, stream: IO[str] | None = None, rate_hz: float = 50.0):
        self.stream = stream if stream is not None else sys.stdout
        self.rate_hz = rate_hz
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._label: str | None = None
        self._since: int | None = None

    def format(self, result: dict[str, Any]) -> str:
        seconds = result["sample_end"] / self.rate_hz
        since = (self._since or 0) / self.rate_hz
        minutes, sec = divmod(seconds, 60)
        bar = "#" * int(round(10 * result["confidence"]))
        return (
            f"{int(minutes):4d}:{sec:05.2f}  {result['label']:<18s} {result['confidence']:5.2f} {bar:<10s}"
            f"  raw {result['raw_label']:<18s} since {since:7.1f} s"
        )

    def emit(self, result: dict[str, Any]) -> None:
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
    """Keeps results (and status events) in lists (tests, replay summaries, plots)."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.statuses: list[dict[str, Any]] = []

    def emit(self, result: dict[str, Any]) -> None:
        self.results.append(result)

    def emit_status(self, event: dict[str, Any]) -> None:
        self.statuses.append(event)

    def close(self) -> None:
        pass


def output_path_problem(path: str | Path) -> str | None:
    """What is wrong with `path` as a file to write (None: usable): checked before any work starts,
    so that nothing fails after a whole replay or loses what a session learnt."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a directory; give a file name in it"
    folder = path.parent
    if not folder.is_dir():
        return f"the folder {folder} does not exist; create it or choose another path"
    try:  # a real probe: permissions, read-only mounts and full disks alike (root passes os.access)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".probe")
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror}); choose a writable path"
    return None


def _ends_mid_line(path: str) -> bool:
    """The file exists and its last byte is not a newline."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            if f.tell() == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except FileNotFoundError:
        return False


class RecordingSink(RecordingWriter):
    """A live stream saved as it arrives (firmware_bridge.recording.RecordingWriter: `.csv` of the decoded
    samples or `.bin` of the raw bytes, streamed and fsync'ed every `sync_every_s`), fed by the pipeline's
    decode stage as numpy arrays."""

    def __init__(self, path: str | Path, sync_every_s: float = 1.0, label: str | None = None):
        try:
            super().__init__(path, sync_every_s, label)
        except RecordingError as exc:
            raise SinkError(str(exc)) from None

    def record_bytes(self, data: bytes) -> None:
        """Bytes as they came from the port (kept by a .bin recording only)."""
        self.write_bytes(data)

    def record_samples(self, seq: np.ndarray, t_us: np.ndarray, raw: np.ndarray) -> None:
        """Decoded samples: seq (n,), t_us (n,), raw (n, 6) (kept by a .csv recording only)."""
        if not self.raw:
            self.write_rows(seq.tolist(), t_us.tolist(), raw.tolist())
