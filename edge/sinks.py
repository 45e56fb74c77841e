"""Where results go: JSON lines (a file or stdout), a live terminal line, a recording on disk.

Window results (`emit`) and status events (`emit_status`, edge/status.py) go to every sink; a
sink without `emit_status` ignores status events. `RecordingSink` is fed the decoded samples (or
the raw bytes) by the pipeline's decode stage (`Pipeline(recorder=...)`), not window results.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Protocol

import numpy as np

from firmware_bridge.protocol import SEQ_MODULO, T_US_MODULO
from firmware_bridge.recording import CSV_COLUMNS


class SinkError(OSError):
    """An output that cannot be opened."""


class Sink(Protocol):
    def emit(self, result: dict[str, Any]) -> None: ...
    def close(self) -> None: ...
    # Optional: `counters(counters: dict)`, called by run_loop at every counters report and at the end.
    # Optional: `emit_status(event: dict)`, status events (absent = ignored).


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


def _csv_value(value: float) -> str:
    return "NaN" if math.isnan(value) else repr(value)


class RecordingSink:
    """A live stream saved as it arrives: `.csv` (the decoded samples, the project's recording CSV) or
    `.bin` (the raw serial bytes).

    Streams to disk: what arrived is written and fsync'ed at least every `sync_every_s` (1 s), so a
    crash or a power cut loses at most the last second, and memory holds at most that second. Each
    write is of whole CSV rows, so a killed process leaves a file that replays."""

    def __init__(self, path: str | Path, sync_every_s: float = 1.0, label: str | None = None):
        self.path = Path(path)
        # `har-edge record --label NAME`: every row carries NAME in the label column (a data set recording).
        self._row_end = "\n" if label is None else f",{label}\n"
        self.raw = self.path.suffix.lower() == ".bin"
        self.sync_every_s = sync_every_s
        self.samples = 0
        self.bytes = 0
        self.syncs = 0
        self._pending: list[bytes] = []
        self._last_sync = time.monotonic()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as exc:
            raise SinkError(f"cannot write {self.path}: {exc.strerror}; choose a writable path for --out") from None
        if not self.raw:
            header = ",".join(CSV_COLUMNS) + ("" if label is None else ",label")
            self._write((header + "\n").encode("ascii"))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.bytes += len(data)

    def record_bytes(self, data: bytes) -> None:
        """Bytes as they came from the port (kept by a .bin recording only)."""
        if self.raw and data:
            self._pending.append(bytes(data))
            self._maybe_sync()

    def record_samples(self, seq: np.ndarray, t_us: np.ndarray, raw: np.ndarray) -> None:
        """Decoded samples: seq (n,), t_us (n,), raw (n, 6) (kept by a .csv recording only)."""
        if self.raw or len(seq) == 0:
            return
        rows = [f"{s % SEQ_MODULO},{t % T_US_MODULO}," + ",".join(map(_csv_value, values)) + self._row_end
                for s, t, values in zip(seq.tolist(), t_us.tolist(), raw.tolist())]
        self._pending.append("".join(rows).encode("utf-8"))
        self.samples += len(rows)
        self._maybe_sync()

    def _maybe_sync(self) -> None:
        if time.monotonic() - self._last_sync >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        """Write what is pending (whole rows, one write) and fsync it."""
        if self._pending:
            self._write(b"".join(self._pending))
            self._pending.clear()
        os.fsync(self._fd)
        self.syncs += 1
        self._last_sync = time.monotonic()

    def tick(self) -> None:
        """Called while the port is quiet too: pending rows reach the disk within the second."""
        self._maybe_sync()

    def close(self) -> None:
        if self._fd < 0:
            return
        try:
            self.sync()
        finally:
            os.close(self._fd)
            self._fd = -1
