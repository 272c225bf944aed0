"""The plan against the run: ``run_all.py`` on a dataset with the heavy torchvision backbones, their DEFAULT
weights generated (randomly initialised, seeded) at torchvision's cache file names in a temporary
``TORCH_HOME``, so the run loads them exactly as after a download; then each stage's planned seconds
(``run.json``'s ``plan``) beside its actual seconds and peak RSS. Accuracies of generated weights mean
nothing; times and memory do. Appends to ``results/plan_vs_actual-<cpu>.csv``.

    python benchmarks/plan_vs_actual.py --data-dir /path/to/data --dataset ucmerced \\
        --models resnet50,densenet121 -- --quick --epochs 3
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch
import torchvision

from scenelib.hardware import cpu_features, cpu_name, int8_class
from scenelib.models import MODELS
from scenelib.rundir import read_json

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def write_generated_weights(torch_home: Path, names: list[str], seed: int = 0) -> None:
    """Seeded random state dicts at ``$TORCH_HOME/hub/checkpoints/<basename of Weights.DEFAULT.url>``."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        tv_name = MODELS[name].torchvision_name
        if not tv_name:
            continue
        path = folder / os.path.basename(torchvision.models.get_model_weights(tv_name).DEFAULT.url)
        if not path.exists():
            torch.manual_seed(seed)
            kwargs = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
            torch.save(torchvision.models.get_model(tv_name, weights=None, **kwargs).state_dict(), path)


def replan(info: dict) -> dict[str, float]:
    """The planned stage seconds of a finished run's plan recomputed by the current ``scenelib.plan`` (its
    constants may have changed since the run), from the inputs run.json recorded."""
    from scenelib.plan import estimate_model, stage_plan

    plan, params = info["plan"], info["parameters"]
    plans = []
    for name, m in plan["models"].items():
        p = estimate_model(
            name,
            m["strategy"],
            m["input_size"],
            m["epochs"],
            plan["counts"],
            plan.get("n_classes", 21),
            plan.get("views", 8),
            params["tta"],
            plan["reference_ms"],
            params["quick"],
            params["calibration_images"],
            params["device"] != "cpu",
            params["seed"],
        )
        p.status = m["status"]
        plans.append(p)
    return stage_plan(plans)


def rows_of(run: Path, label: str) -> list[dict]:
    info = read_json(run if run.suffix == ".json" else run / "run.json")
    plan = info.get("plan") or {}
    current = replan(info) if plan else {}
    machine = info["machine"]
    features = cpu_features()
    rows = []
    for stage, seconds in info["stage_seconds"].items():
        planned = plan.get("stages", {}).get(stage)
        rows.append(
            {
                "label": label,
                "stage": stage,
                "planned_s": planned,
                "actual_s": seconds,
                "actual_over_planned": round(seconds / planned, 3) if planned else None,
                "planned_now_s": current.get(stage),
                "peak_rss_mb": info.get("stage_peak_rss_mb", {}).get(stage),
                "planned_peak_mb": plan.get("peak_memory_mb"),
                "cache_mb": sum(m["cache_mb"] for m in plan.get("models", {}).values()),
                "images": sum(plan.get("counts", {}).values()),
                "reference_ms_start": machine.get("mobilenet_v2_eager_ms"),
                "reference_ms_end": machine.get("mobilenet_v2_eager_ms_end"),
                "load_average": (machine.get("load_average") or [None])[0],
                "cpu": cpu_name(),
                "int8_class": int8_class(features),
                **{f: features[f] for f in ("avx2", "avx512_vnni", "amx_int8")},
                "threads": info["threads"],
                "command": info["command"],
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True)
    p.add_argument("--dataset", default="ucmerced")
    p.add_argument("--models", default="resnet50,densenet121")
    p.add_argument("--label", default="")
    p.add_argument("rest", nargs="*", help="further run_all.py options, after --")
    args = p.parse_args()
    models = args.models.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(os.environ.get("PLAN_TORCH_HOME") or Path(tmp) / "torch_home")
        write_generated_weights(home, models)
        out = Path(tmp) / "run"
        command = [
            sys.executable,
            str(REPO / "run_all.py"),
            *("--dataset", args.dataset, "--data-dir", args.data_dir, "--models", args.models),
            *("--weights", "torchvision", "--output", str(out), *args.rest),
        ]
        subprocess.run(command, check=False, env={**os.environ, "TORCH_HOME": str(home)})
        rows = rows_of(out, args.label or f"{args.dataset} {args.models} {' '.join(args.rest)}")
    df = pd.DataFrame(rows)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")[:40]
    path = RESULTS / f"plan_vs_actual-{slug}.csv"
    if path.exists():
        df = pd.concat([pd.read_csv(path), df], ignore_index=True)
    df.to_csv(path, index=False)
    print(
        df[["label", "stage", "planned_s", "actual_s", "peak_rss_mb"]].tail(len(rows)).to_string(index=False)
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
