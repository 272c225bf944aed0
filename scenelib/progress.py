"""Live progress of a stage, seen from the terminal that runs the pipeline.

A stage runs in a papermill kernel whose output the terminal never sees, and a slow stage (a feature cache,
twelve epochs, an INT8 guard) can take minutes. The stages' progress bars are ``tqdm`` bars, shown in the
notebook as usual; when ``$SCENELIB_PROGRESS`` names a file (the executor sets it), each bar also writes its
state there, at most once a second. The pipeline's :class:`Watcher` reads that file while the stage runs and
prints one line: rewritten in place on a terminal, a new line every ``$SCENELIB_PROGRESS_EVERY`` seconds
(default 30) in a log file.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

PROGRESS_ENV = "SCENELIB_PROGRESS"
EVERY_ENV = "SCENELIB_PROGRESS_EVERY"
WRITE_EVERY_S = 1.0


class bar(tqdm):  # noqa: N801 - used exactly like tqdm
    """A tqdm bar that also publishes its state to ``$SCENELIB_PROGRESS`` (when set). Nested bars (a
    quantization step, and the evaluation inside it) are published together, outermost first."""

    _open: list[bar] = []

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("leave", False)
        self._target = os.environ.get(PROGRESS_ENV)
        self._written = 0.0
        super().__init__(*args, **kwargs)
        bar._open.append(self)

    def close(self) -> None:
        if self in bar._open:
            bar._open.remove(self)
        super().close()

    def display(self, msg=None, pos=None):
        shown = super().display(msg, pos)
        self.publish()
        return shown

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        super().set_postfix_str(s, refresh)
        self.publish(force=True)

    def update(self, n: float = 1):
        shown = super().update(n)
        if not self.disable and self.n >= (self.total or float("inf")):
            self.publish(force=True)
        return shown

    def state(self) -> dict:
        d = self.format_dict
        rate = d.get("rate") or (d["n"] / d["elapsed"] if d.get("elapsed") and d["n"] else None)
        return {
            "desc": d.get("prefix") or "",
            "n": d["n"],
            "total": d.get("total"),
            "unit": d.get("unit", "it"),
            "postfix": d.get("postfix") or "",
            "seconds_left": (d["total"] - d["n"]) / rate if rate and d.get("total") else None,
        }

    def publish(self, force: bool = False) -> None:
        now = time.monotonic()
        if not self._target or (not force and now - self._written < WRITE_EVERY_S):
            return
        self._written = now
        bars = [b for b in bar._open if not b.disable] or [self]
        state = {"bars": [b.state() for b in bars], "at": time.time()}
        path = Path(self._target)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, path)
        except OSError:  # progress is a courtesy: a full disk must not fail the stage
            tmp.unlink(missing_ok=True)


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def describe(state: dict) -> str:
    """'cache train 46% (4,821/10,584 img), about 1.2 min left'; nested bars joined by ' > '."""
    if "bars" in state:
        return " > ".join(describe(b) for b in state["bars"])
    n, total, unit = state.get("n", 0), state.get("total"), state.get("unit", "it")
    parts = [state.get("desc") or "working"]
    if total:
        parts.append(f"{100 * n / total:.0f}% ({n:,.0f}/{total:,.0f} {unit})")
    else:
        parts.append(f"{n:,.0f} {unit}")
    text = " ".join(parts)
    left = state.get("seconds_left")
    if left is not None and n and not (total and n >= total):
        text += f", about {left / 60:.1f} min left" if left >= 60 else f", about {left:.0f} s left"
    if state.get("postfix"):
        text += f", {state['postfix']}"
    return text


class Watcher:
    """Prints the progress files of the stages running (a context manager around their execution): one
    line, the stages joined by ' | ' when several run at once (Ray)."""

    def __init__(self, paths: dict[str, Path], stream: TextIO | None = None, every: float | None = None):
        self.paths = paths  # label -> progress file
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = float(os.environ.get(EVERY_ENV, 30)) if every is None else every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._last_text, self._last_print, self._width = "", time.monotonic(), 0
        self._lock = threading.Lock()

    def __enter__(self) -> Watcher:
        for path in self.paths.values():
            path.unlink(missing_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        if self.tty and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
        for path in self.paths.values():
            path.unlink(missing_ok=True)

    def _loop(self) -> None:
        while not self._stop.wait(1.0 if self.tty else max(0.2, min(self.every, 5.0))):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            self._poll()

    def _poll(self) -> None:
        states = {label: read_state(path) for label, path in self.paths.items()}
        shown = [f"{label}: {describe(state)}" for label, state in states.items() if state is not None]
        if not shown:
            return
        text = "    " + " | ".join(shown)
        now = time.monotonic()
        if self.tty:
            if text != self._last_text:
                self.stream.write("\r" + text.ljust(self._width))
                self._width = len(text)
                self.stream.flush()
        elif text != self._last_text and now - self._last_print >= self.every:
            self.stream.write(text + "\n")
            self.stream.flush()
            self._last_print = now
        else:
            return
        self._last_text = text
