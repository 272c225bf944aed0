"""Project-level contracts: the run-directory files, the dependency lists and the notebooks' parameters."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
import yaml

from scenelib.pipeline import NOTEBOOKS, STAGES
from scenelib.rundir import RunDir, params_hash

ROOT = Path(__file__).resolve().parent.parent


def _names(lines) -> set[str]:
    out = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out.add(re.split(r"[=<>!~ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_environment_yml_and_requirements_name_the_same_packages():
    pip_names = set()
    for f in ("requirements.txt", "requirements-nodeps.txt", "requirements-test.txt", "requirements-ray.txt"):
        pip_names |= _names((ROOT / f).read_text().splitlines())
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip_section = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section |= _names(dep["pip"])
        else:
            conda |= _names([dep])
    assert (conda | pip_section) - {"python", "pip"} == pip_names
    assert (
        "torch==2.14.1" in (ROOT / "requirements.txt").read_text()
        and "torchvision==0.29.1" in (ROOT / "requirements.txt").read_text()
    )


@pytest.mark.parametrize("stage", STAGES)
def test_each_notebook_has_one_parameters_cell(stage):
    nb = jupytext.read(NOTEBOOKS / f"{stage}.py")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    assert "run_dir" in tagged[0].source


def test_results_upsert_merges_columns_and_checks_names(tmp_path):
    run = RunDir(tmp_path)
    run.upsert_results([{"model": "m", "variant": "fp32", "accuracy": 0.5}])
    run.upsert_results(
        [
            {"model": "m", "variant": "fp32", "latency_ms_b1": 12.5},
            {"model": "m", "variant": "onnx-int8", "status": "ok"},
        ]
    )
    rows = run.read_results()
    assert [(r["variant"], r["accuracy"], r["latency_ms_b1"]) for r in rows] == [
        ("fp32", "0.5", "12.5"),
        ("onnx-int8", "", ""),
    ]
    with pytest.raises(ValueError, match="unknown results.csv columns"):
        run.upsert_results([{"model": "m", "variant": "fp32", "acc": 1}])
    with pytest.raises(ValueError, match="variant must be one of"):
        run.upsert_results([{"model": "m", "variant": "fp16"}])


def test_stage_markers_follow_their_parameters(tmp_path):
    run = RunDir(tmp_path)
    run.mark_stage_done("03_benchmark", {"threads": 2}, 1.0)
    assert run.stage_done("03_benchmark", {"threads": 2}) and not run.stage_done(
        "03_benchmark", {"threads": 1}
    )
    assert params_hash({"a": 1, "b": 2}) == params_hash({"b": 2, "a": 1})
    run.clear_stage("03_benchmark")
    assert not run.stage_done("03_benchmark", {"threads": 2})
