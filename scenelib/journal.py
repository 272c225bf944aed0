"""What ran in a run directory, when, and by whom: an append-only ``journal.jsonl``.

A stage notebook opened in JupyterLab and run by hand rewrites its files (``benchmark.json``,
``results.csv``, ...) while ``report.html`` and ``run.json`` still tell the earlier story. Every stage
appends one line here when it finishes, marked ``pipeline`` or ``by hand``; a stage run by hand after the
report was rendered says so at once, with the command that re-renders the report, and the report lists every
stage that was run by hand.
"""

from __future__ import annotations

import getpass
import json
import os
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
        warnings.warn(
            f"{stage} changed this run's files after report.html was rendered, so the report no longer "
            f"matches them. Re-render it: python run_all.py --output {run.root} --only report",
            StaleReportWarning,
            stacklevel=2,
        )
    return entry


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
