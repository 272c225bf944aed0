"""The run's answer: the INT8 verdict's tiers, and a report whose first block and every emphasis follow the
validation choice."""

from __future__ import annotations

import re

import pytest

from scenelib import verdict as vd
from scenelib.claims import int8_verdict, validation_ranking
from scenelib.report import CHOSEN_STYLE


def _variants(changed: int, n: int, int8_ms: float, noisy: bool = False, status: str = "ok") -> dict:
    fp32 = {"status": "ok", "latency": {"median_ms": 6.0}, "val_change_pt": 0.0}
    return {
        "fp32": {"status": "ok", "latency": {"median_ms": 20.0}},
        "onnx-fp32": fp32,
        "onnx-int8": {
            "status": status,
            "latency": {"median_ms": int8_ms, "noisy": noisy},
            "val_changed": changed,
            "val_images": n,
            "val_change_pt": -100.0 * changed / n / 2,
        },
    }


@pytest.mark.parametrize(
    "variants, tier",
    [
        (_variants(0, 700, 4.0), "certified"),  # 0 of 700: the 95% bound is 0.43%
        (_variants(0, 147, 4.0), "held"),  # 0 of 147 changed, but 147 images cannot certify 0.5%
        (_variants(0, 147, 5.9), "not faster"),
        (_variants(0, 147, 4.0, noisy=True), "undecided"),
        (_variants(3, 147, 4.0), "rejected"),  # -1.02 pt on validation
        (_variants(3, 147, 4.0, noisy=True), "rejected"),  # losing accuracy decides before a noisy timing
        (_variants(1, 147, 4.0), "held"),  # -0.34 pt: kept within 0.5 pt, one answer changed
        (_variants(0, 147, 4.0, status="rejected: u8s8, the only recipe tried, lost 0.7 pt"), "rejected"),
    ],
)
def test_the_int8_verdict_tiers(variants, tier):
    v = int8_verdict(variants)
    assert v["tier"] == tier and v["variant"] == "onnx-int8" and v["baseline"] == "onnx-fp32"
    words = {"held": "held on validation", "not faster": "not worth it"}
    assert f"INT8 **{words.get(tier, tier)}" in v["text"]
    if tier == "held":
        need = "598" if variants["onnx-int8"]["val_changed"] == 0 else "947"  # images to certify 0 / 1 changed
        assert "not certifiable with 147 images" in v["text"] and f"{need} validation images" in v["text"]
        assert "1.50x" in v["text"]


def test_no_int8_variant_is_said_so():
    assert int8_verdict({"onnx-fp32": {"status": "ok", "latency": {"median_ms": 6.0}}})["tier"] == "not built"


def _emphasised_rows(html: str) -> list[tuple[str, str]]:
    """(model, variant) of every table row styled with the chosen-row emphasis."""
    rows = []
    rule = CHOSEN_STYLE.replace("; ", ";\n  ") + ";"
    for block in re.findall(r"<style type=\"text/css\">(.*?)</style>", html, flags=re.S):
        for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", block):
            if rule.strip() not in body.strip():
                continue
            for table, row in set(re.findall(r"#(T_\w+)_row(\d+)_col\d+", selectors)):
                cells = [
                    re.search(rf'id="{table}_row{row}_col{c}"[^>]*>([^<]*)<', html).group(1) for c in (0, 1)
                ]
                rows.append(tuple(cells))
    return rows


def test_the_report_opens_with_the_answer_and_emphasises_only_the_validation_choice(tiny_run):
    code, run = tiny_run
    assert code == 0
    html = run.report_html.read_text()
    answer = vd.verdict(run)
    assert answer.model == validation_ranking(run)[0]["model"]
    assert html.index("The answer") < html.index("Summary")
    assert f"Deploy {answer.model} as {vd.RUNTIMES[answer.variant]}" in html
    assert _emphasised_rows(html) == [(answer.model, answer.variant)]
    assert "Pareto" not in html  # no front ranked by test accuracy
    assert run.results_md.read_text().startswith("### The answer")
    block = vd.plain_text(answer)
    assert "**" not in block and "INT8" in block and "ms per image" in block
    assert block in (run.root.parent / "stdout.txt").read_text()  # printed when the run finished
