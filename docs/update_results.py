"""Refresh the committed results from a finished run: its ``results.md`` (the answer block and the main table)
is copied to ``docs/results-<dataset>.md``, and its answer block into the README between the results markers,
each with the machine line from the run's ``run.json``; with Chromium installed, the report's first screen (1600x1000) is saved as
``docs/first-screen.png``.

    python docs/update_results.py reports/ucmerced/latest
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
README = DOCS.parent / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def machine_line(run: Path) -> str:
    info = json.loads((run / "run.json").read_text())
    m = info.get("machine") or {}
    words = shlex.split(info.get("command", "?"))
    for flag, placeholder in (("--data-dir", "DATA_DIR"), ("--output", "OUTPUT")):  # this machine's paths
        if flag in words[:-1]:
            words[words.index(flag) + 1] = placeholder
    return (
        f"Measured on {m.get('cpu', '?')} ({m.get('summary', 'features not recorded')}), "
        f"{info.get('threads')} threads, eager MobileNetV2 at batch 1: {m.get('mobilenet_v2_eager_ms', '?')} ms "
        f"at the start and {m.get('mobilenet_v2_eager_ms_end', '?')} ms at the end; "
        f"command `{shlex.join(words)}`, {info.get('start', '?')}."
    )


def screenshot(report: Path, out: Path) -> bool:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        return False
    with tempfile.TemporaryDirectory() as profile:
        flags = "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run"
        flags += " --disable-background-networking --disable-component-update --disable-sync"
        subprocess.run(
            [
                *browser.split(),
                *flags.split(),
                f"--user-data-dir={profile}",
                "--window-size=1600,1000",
                f"--screenshot={out}",
                report.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    return out.exists()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a finished run directory")
    args = p.parse_args()
    run = args.run.resolve()
    dataset = json.loads((run / "data_summary.json").read_text())["dataset"]
    # the run's own folder is where it happened to be written; a reader's is reports/<dataset>/latest
    block = (run / "results.md").read_text().strip().replace(str(run), f"reports/{dataset}/latest")
    block += "\n\n" + machine_line(run)
    (DOCS / f"results-{dataset}.md").write_text(block + "\n")
    # the README keeps the answer and the machine; the table of every model and variant stays in docs/
    answer = block.split("\n| model |")[0].strip()
    short = f"{answer}\n\n{machine_line(run)} Every model and variant: `docs/results-{dataset}.md`."
    text = README.read_text()
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), flags=re.S)
    README.write_text(pattern.sub(lambda _: f"{START}\n{short}\n{END}", text))
    shot = screenshot(run / "report.html", DOCS / "first-screen.png")
    print(f"wrote docs/results-{dataset}.md and README.md" + (", docs/first-screen.png" if shot else ""))


if __name__ == "__main__":
    main()
