"""What ran in a run directory, when, and by whom: an append-only ``journal.jsonl``.

A stage notebook opened in JupyterLab and run by hand rewrites its files (``benchmark.json``,
``results.csv``, ...) while ``report.html`` and ``run.json`` still tell the earlier story. Every stage
appends one line here when it finishes, marked ``pipeline`` or ``by hand``; a stage run by hand after the
report was rendered says so at once, with the command that re-renders the report, and puts a banner at the
top of report.html saying so until it is re-rendered; the re-rendered report lists every stage run by hand.
"""

from __future__ import annotations

import getpass
import html
import json
import os
import re
import shlex
import socket
import warnings
from datetime import datetime, timezone

from .rundir import RunDir

PIPELINE_ENV = "SCENELIB_PIPELINE"  # set by the executor in the kernels the pipeline starts
JOURNAL_FILE = "journal.jsonl"


class StaleReportWarning(UserWarning):
    """A stage changed a run's files after its report was rendered."""


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


def record(run: RunDir, stage: str, model: str | None = None, via: str | None = None) -> dict:
    """Append this stage's line; warn when a stage run by hand leaves the rendered report behind."""
    entry = {
        "stage": stage,
        "model": model,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "via": via or ("pipeline" if os.environ.get(PIPELINE_ENV) else "by hand"),
        "who": _who(),
    }
    with open(run.root / JOURNAL_FILE, "a", encoding="utf-8") as fh:  # one short line: appends are atomic
        fh.write(json.dumps(entry) + "\n")
    if entry["via"] == "by hand" and stage != "05_report" and run.report_html.exists():
        message = (
            f"{stage} changed this run's files after report.html was rendered, so the report no longer "
            f"matches them. Re-render it: {rerender_command(run)}"
        )
        mark_report_stale(run, f"{stage}{' ' + model if model else ''} at {entry['finished']}: {message}")
        warnings.warn(message, StaleReportWarning, stacklevel=2)
    return entry


def record_by_hand(run: RunDir, stage: str, model: str | None = None) -> dict | None:
    """``record`` for a notebook that the pipeline follows with its own line (05_report): only by hand."""
    return None if os.environ.get(PIPELINE_ENV) else record(run, stage, model)


def rerender_command(run: RunDir) -> str:
    """The command that re-renders ``run``'s report from its files alone (no data folder needed)."""
    return f"python run_all.py --output {shlex.quote(str(run.root))} --only report"


STALE_BEGIN, STALE_END = "<!-- scenelib:stale -->", "<!-- /scenelib:stale -->"


def mark_report_stale(run: RunDir, note: str) -> None:
    """A banner at the top of report.html (wherever it is opened, JupyterLab's HTML viewer included) until
    it is re-rendered; one banner, naming the latest stage that left it behind."""
    from .atomic import write_text

    try:
        page = run.report_html.read_text(encoding="utf-8")
    except OSError:
        return
    if STALE_BEGIN in page and STALE_END in page:
        page = page[: page.index(STALE_BEGIN)] + page[page.index(STALE_END) + len(STALE_END) :]
    banner = (
        f'{STALE_BEGIN}<div class="scenelib-stale" style="background:#fff3cd;border:2px solid #c90;'
        f'padding:0.6em 1em;margin:0 0 1em 0;font:15px sans-serif"><b>This report is out of date.</b> '
        f"{html.escape(note)}</div>{STALE_END}"
    )
    body = re.search(r"<body[^>]*>", page)
    at = body.end() if body else 0
    write_text(run.report_html, page[:at] + banner + page[at:])


def read(run: RunDir) -> list[dict]:
    """Every recorded line, oldest first; a torn or foreign line is skipped."""
    path = run.root / JOURNAL_FILE
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and "stage" in entry:
            out.append(entry)
    return out


def by_hand(run: RunDir) -> list[dict]:
    """Stages run outside the pipeline (a notebook in JupyterLab, papermill by hand)."""
    return [e for e in read(run) if e.get("via") == "by hand"]
