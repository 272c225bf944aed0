"""End to end: run_all.py through papermill and nbconvert on tiny real data, and its bad-input paths."""

from __future__ import annotations

import base64
import re
import shutil

import nbformat
import pandas as pd
import pytest
import torch

from scenelib.pipeline import StageOutcome, main, record_training_outcome
from scenelib.recipes import NOT_BUILT
from scenelib.rundir import RESULT_COLUMNS, TRAIN_VAL, VARIANTS, RunDir, read_json

from .conftest import write_image_tree


def test_end_to_end_run_directory(tiny_run):
    code, run = tiny_run
    assert code == 0
    results = pd.read_csv(run.results_csv)
    assert list(results.columns) == list(RESULT_COLUMNS)
    vote = results[results.model.str.startswith("ensemble(")]  # the validated soft vote of the two models
    assert list(vote.model) == ["ensemble(mobilenet_v2+simple_cnn)"] or list(vote.model) == [
        "ensemble(simple_cnn+mobilenet_v2)"
    ]
    assert vote.iloc[0].latency_ms_b1 == pytest.approx(  # results.csv keeps 6 significant digits
        results[(results.variant == "fp32") & ~results.model.str.startswith("ensemble(")].latency_ms_b1.sum(),
        rel=1e-4,
    )
    results = results.drop(vote.index)
    assert set(zip(results.model, results.variant)) == {
        (m, v) for m in ("simple_cnn", "mobilenet_v2") for v in VARIANTS
    }
    fp32_like = results.variant.isin(["fp32", "onnx-fp32"])
    assert (results[fp32_like].status == "ok").all(), results[["model", "variant", "status"]]
    # INT8 variants are kept or, if no recipe holds on validation, reported as rejected with their numbers;
    # one slower than its fp32 on this CPU says so and has no test numbers (it would decide nothing).
    int8 = results[~fp32_like]
    assert int8.status.str.match(r"^(ok|rejected: |not recommended: )").all(), results.status
    assert int8[int8.status.str.startswith("not recommended")].accuracy.isna().all()
    measured = results[results.status == "ok"]
    assert (measured.latency_ms_b1 > 0).all() and measured.accuracy.notna().all()
    assert (measured.accuracy_ci_low <= measured.accuracy).all()
    assert (measured.accuracy <= measured.accuracy_ci_high).all()
    quant = read_json(run.quantization_json)
    # PyTorch INT8 found slower than an fp32 runtime by the quick check, before calibration, per model
    stopped = {
        m: e["variants"]["int8-torch"]["status"].endswith(NOT_BUILT) for m, e in quant["models"].items()
    }
    for model in ("simple_cnn", "mobilenet_v2"):  # val_accuracy: single view, as the model was chosen
        row = results[(results.model == model) & (results.variant == "fp32")].iloc[0]
        assert row.val_accuracy == pytest.approx(read_json(run.train_json(model))["val_accuracy"], abs=1e-6)
        onnx = quant["models"][model]["variants"]["onnx-fp32"]
        assert results.set_index(["model", "variant"]).loc[(model, "onnx-fp32"), "val_accuracy"] == (
            pytest.approx(onnx["val_accuracy_single_view"], abs=1e-6)
        )
    for model in ("simple_cnn", "mobilenet_v2"):
        for variant in ("onnx-int8", "int8-torch"):
            entry = quant["models"][model]["variants"][variant]
            attempts = entry["guard"]["attempts"]
            # every recipe built is validated; a quick check that finds one slower than an fp32 runtime
            # before calibration stops the search with nothing built (every attempt, if the first)
            quick = entry["status"].endswith(NOT_BUILT)
            assert attempts and all(
                (a["val_accuracy"] is None) == a["status"].startswith(("not built", "failed")) for a in attempts
            ), entry["status"]
            assert not quick or all(a["val_accuracy"] is None for a in attempts), entry["status"]
    fp32 = results[results.variant == "fp32"].set_index("model")
    assert fp32.loc["mobilenet_v2", "weights"].startswith(("offline:", "torchvision:"))
    assert (
        fp32.loc["simple_cnn", "strategy"] == "scratch" and fp32.loc["mobilenet_v2", "strategy"] == "partial"
    )
    assert (fp32.params > 1e5).all() and (fp32.macs > 1e6).all() and (fp32.size_mb > 0).all()

    info = read_json(run.run_json)
    for key in ("parameters", "python", "torch", "torchvision", "cpu", "threads", "seed", "start", "end"):
        assert info[key] not in (None, ""), key
    assert pd.Timestamp(info["end"]) >= pd.Timestamp(info["start"])
    # the reference latency, sampled at the start and again after quantization, both in the report
    assert info["machine"]["mobilenet_v2_eager_ms"] > 0 and info["machine"]["mobilenet_v2_eager_ms_end"] > 0
    assert (
        f"{info['machine']['mobilenet_v2_eager_ms_end']:.1f} ms after quantization"
        in run.report_html.read_text()
    )

    names = {p.name for p in run.notebooks_dir.glob("*.ipynb")}
    assert names == {
        "01_explore_data.ipynb",
        "02_train_model-simple_cnn.ipynb",
        "02_train_model-mobilenet_v2.ipynb",
        "03_benchmark.ipynb",
        "04_quantize.ipynb",
        "05_report.ipynb",
    }
    for path in run.notebooks_dir.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        assert any("parameters" in c.metadata.get("tags", []) for c in nb.cells)
        assert not [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"], path.name

    for model in ("simple_cnn", "mobilenet_v2"):
        train = read_json(run.train_json(model))
        for key in (
            "weights_source",
            "weights_sha256",
            "strategy",
            "train_seconds",
            "best_epoch",
            "test_accuracy",
        ):
            assert key in train
        for path in (
            run.checkpoint(model),
            run.history_json(model),
            run.onnx_fp32(model),
            run.onnx_int8(model),
        ):
            assert path.exists(), path
        # PyTorch INT8 is saved unless its quick check stopped it before calibration (then no stale file)
        assert run.torch_int8(model).exists() == (not stopped[model])
    summary = read_json(run.data_summary_json)
    assert summary["n_images"] == 30 and summary["class_counts"] == {"alpha": 10, "beta": 10, "gamma": 10}

    html = run.report_html.read_text()
    assert "<table" in html and "mobilenet_v2" in html and "simple_cnn" in html
    images = re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)
    assert len(images) >= 6 and all(base64.b64decode(i)[:4] == b"\x89PNG" for i in images)
    assert not re.search(r"<script[^>]+src=\"http", html), "the report must open offline"
    assert "Traceback" not in html and "Warning" not in html
    assert run.results_md.read_text().startswith("### The answer")
    assert "\n| model | variant |" in run.results_md.read_text()


def test_the_terminal_shows_progress_inside_long_stages(tiny_run):
    """Kernel progress bars reach the terminal: epochs with validation accuracy, cache and INT8 steps."""
    _, run = tiny_run
    lines = (run.root.parent / "stdout.txt").read_text().splitlines()
    progress = [line for line in lines if line.startswith("    ")]
    # What the watcher sees is a snapshot taken while the stage runs: at least one line per stage.
    assert any(re.match(r"    02_train_model mobilenet_v2: .+ \d+% \(", line) for line in progress), progress
    assert any(line.startswith("    04_quantize: mobilenet_v2: ") for line in progress), progress
    assert not list(run.root.glob(".progress-*")), "progress files are removed when a stage ends"


def test_resume_skips_finished_work(tiny_run, capsys):
    code, run = tiny_run
    before = run.results_csv.read_text()
    assert (
        main(
            [
                "--dataset",
                "folder",
                "--data-dir",
                read_json(run.run_json)["parameters"]["data_dir"],
                "--models",
                "simple_cnn,mobilenet_v2",
                "--epochs",
                "1",
                "--output",
                str(run.root),
                "--threads",
                "2",
                "--calibration-images",
                "16",
                "--quick",
                "--resume",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.count("done in an earlier run, skipped") == 6
    assert run.results_csv.read_text() == before
    assert len(read_json(run.run_json)["resumed_at"]) == 1  # one entry per resume, not per stage


def test_a_copied_run_directory_resumes_without_redoing_anything(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    copy = tmp_path / "moved"
    shutil.copytree(run.root, copy, symlinks=True)
    args = ["--dataset", "folder", "--data-dir", read_json(run.run_json)["parameters"]["data_dir"]]
    args += ["--models", "simple_cnn,mobilenet_v2", "--epochs", "1", "--threads", "2"]
    assert main([*args, "--calibration-images", "16", "--quick", "--output", str(copy), "--resume"]) == 0
    assert capsys.readouterr().out.count("done in an earlier run, skipped") == 6


def test_only_report_re_renders_and_runs_nothing_else(tiny_run, capsys):
    code, run = tiny_run
    before = run.results_csv.read_text()
    machine = read_json(run.run_json)["machine"]
    run.report_html.unlink()
    args = ["--dataset", "folder", "--data-dir", read_json(run.run_json)["parameters"]["data_dir"]]
    assert main([*args, "--output", str(run.root), "--only", "report"]) == 0
    out = capsys.readouterr().out
    assert "05_report: running" in out and "02_train_model" not in out and "03_benchmark" not in out
    assert run.report_html.exists() and run.results_csv.read_text() == before
    # the report still names the machine its timings were taken on, not the one that re-rendered it
    assert read_json(run.run_json)["machine"] == machine


def test_unknown_names_exit_2_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--dataset", "nope", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "valid names" in err and "ucmerced" in err and not out.exists()
    assert (
        main(
            [
                "--dataset",
                "folder",
                "--data-dir",
                str(tmp_path),
                "--models",
                "resnet9000",
                "--output",
                str(out),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "resnet9000" in err and "mobilenet_v2" in err and not out.exists()


def test_missing_dataset_is_one_clear_error(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["--dataset", "ucmerced", "--data-dir", str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "ucmerced" in err and "nowhere" in err and "Traceback" not in err and not out.exists()


def test_existing_output_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    data = write_image_tree(tmp_path / "data", ["a", "b"], 4)
    assert main(["--dataset", "folder", "--data-dir", str(data), "--output", str(out)]) == 2
    assert "--resume" in capsys.readouterr().err and (out / "mine.txt").read_text() == "keep me"


def test_failed_model_is_reported_and_the_run_completes(tmp_path, capsys):
    data = write_image_tree(tmp_path / "data", ["a", "b", "c"], 8)
    out = tmp_path / "run"
    torch.save({"features.0.weight": torch.zeros(3)}, tmp_path / "wrong.pth")  # not a MobileNetV2
    code = main(
        [
            "--dataset",
            "folder",
            "--data-dir",
            str(data),
            "--models",
            "simple_cnn,mobilenet_v2",
            "--weights",
            str(tmp_path / "wrong.pth"),
            "--epochs",
            "1",
            "--output",
            str(out),
            "--quick",
            "--calibration-images",
            "8",
        ]
    )
    assert code == 1
    run = RunDir(out)
    results = pd.read_csv(run.results_csv)
    failed = results[(results.model == "mobilenet_v2")]
    assert len(failed) == 1 and failed.status.iloc[0].startswith("failed: ValueError")
    assert not results[results.model == "simple_cnn"].status.str.startswith("failed").any()
    assert run.report_html.exists() and "failed: ValueError" in run.report_html.read_text()
    nb = nbformat.read(run.executed_notebook("02_train_model", "mobilenet_v2"), as_version=4)
    assert any(o.output_type == "error" for c in nb.cells for o in c.get("outputs", []))
    assert "02_train_model mobilenet_v2: failed" in capsys.readouterr().out


@pytest.mark.parametrize("status", ["skipped: WeightsUnavailableError: none", "failed: RuntimeError: boom"])
def test_unfinished_training_becomes_a_results_row(tmp_path, status):
    run = RunDir(tmp_path)
    outcome = StageOutcome("02_train_model-resnet50", status, 1.0)
    assert record_training_outcome(run, "resnet50", outcome) is status.startswith("failed")
    assert run.read_results()[0]["status"] == status
    assert read_json(run.train_json("resnet50"))["status"] == status


def test_repeats_train_every_model_on_more_seeded_splits(tiny_dataset, tmp_path):
    """--repeats 2: a second seeded split, the model trained on it, mean ± std in results and report."""
    out = tmp_path / "rep"
    argv = ["--dataset", "folder", "--data-dir", str(tiny_dataset), "--models", "simple_cnn"]
    argv += ["--epochs", "1", "--output", str(out), "--threads", "2", "--quick", "--repeats", "2"]
    assert main(argv) == 0
    run = RunDir(out)
    second = RunDir(out / "repeats" / "r2")
    first_split, second_split = (pd.read_csv(r.splits_csv) for r in (run, second))
    assert set(first_split.path) == set(second_split.path)  # the same images, drawn again
    assert (first_split.set_index("path").split != second_split.set_index("path").split).any()
    assert second.checkpoint("simple_cnn").exists()
    rows = pd.read_csv(out / "repeats.csv")
    assert list(rows.split) == [1, 2] and rows.seed.tolist() == [0, 1]
    fp32 = pd.read_csv(run.results_csv).set_index(["model", "variant"]).loc[("simple_cnn", "fp32")]
    assert fp32.repeats == 2 and fp32.accuracy_mean == pytest.approx(rows.accuracy.mean())
    assert fp32.accuracy_std == pytest.approx(rows.accuracy.std(ddof=1))
    html = run.report_html.read_text()
    assert "Over 2 seeded splits" in html and "Repeated splits" in html
    assert "validation picks (simple_cnn, simple_cnn)" in html
    assert rows[rows.model == "simple_cnn"].val_loss.notna().all()  # the tie-break of the per-split choice
    assert second.predictions("simple_cnn", TRAIN_VAL).exists()  # what a soft vote would be chosen on
    assert "Letting a soft vote" not in html  # one model: nothing to vote with


def test_input_size_changes_the_pretrained_models_and_every_stage_uses_it(tiny_dataset, tmp_path, capsys):
    import onnxruntime as ort

    out = tmp_path / "run"
    args = ["--dataset", "folder", "--data-dir", str(tiny_dataset), "--models", "simple_cnn,mobilenet_v2"]
    args += ["--epochs", "1", "--quick", "--calibration-images", "8", "--output", str(out)]
    assert main([*args, "--input-size", "16"]) == 2  # too small for an ImageNet backbone
    assert "--input-size must be between 32 and 1024" in capsys.readouterr().err and not out.exists()
    inception = [*args[:4], "--models", "inception_v3", *args[6:]]
    assert main([*inception, "--input-size", "224"]) == 2  # its auxiliary head needs 299 px
    assert "between 299 and 1024" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--input-size", "96"]) == 0
    run = RunDir(out)
    mobilenet, simple = read_json(run.train_json("mobilenet_v2")), read_json(run.train_json("simple_cnn"))
    assert (mobilenet["input_size"], mobilenet["native_input_size"]) == (96, 224)
    assert simple["input_size"] == simple["native_input_size"] == 64  # trained from scratch: its own size
    assert read_json(run.benchmark_json)["models"]["mobilenet_v2"]["input_size"] == 96
    session = ort.InferenceSession(str(run.root / "models/mobilenet_v2/model.int8.onnx"))
    assert session.get_inputs()[0].shape[-2:] == [96, 96]
    assert "(native 224 px)" in run.executed_notebook("02_train_model", "mobilenet_v2").read_text()
    assert "<th" in run.report_html.read_text() and ">input px<" in run.report_html.read_text()


def test_a_default_model_without_weights_is_skipped_without_starting_its_notebook(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    from scenelib import cli, weights
    from scenelib.models import MODELS
    from scenelib.weights import missing_weights

    def no_network(spec, arch):
        import sys

        sys.stdout.write('Downloading: "https://download.pytorch.org/models/x.pth"\n')  # as torch.hub does
        raise OSError("no network in this test")

    monkeypatch.setattr(weights, "_from_torchvision", no_network)  # the same answer on a machine online
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # and with nothing cached

    assert "resnet50" in missing_weights(MODELS["resnet50"]) and "To fix" in missing_weights(
        MODELS["resnet50"]
    )
    assert missing_weights(MODELS["mobilenet_v2"]) is None  # an offline package has it
    assert (
        missing_weights(MODELS["resnet50"], "none") is None and missing_weights(MODELS["simple_cnn"]) is None
    )

    monkeypatch.setattr(cli, "QUICK_MODELS", ("resnet50", "simple_cnn"))  # a default set, with a gap
    out = tmp_path / "run"
    args = ["--dataset", "folder", "--data-dir", str(tiny_dataset), "--quick", "--epochs", "1"]
    assert main([*args, "--calibration-images", "8", "--output", str(out)]) == 0
    captured = capsys.readouterr()
    log = captured.out
    assert "02_train_model resnet50: skipped: WeightsUnavailableError: no pretrained weights" in log
    assert "Downloading" not in log + captured.err  # the driver's check stays quiet
    assert "02_train_model resnet50: running" not in log
    run = RunDir(out)
    assert not run.executed_notebook("02_train_model", "resnet50").exists()
    rows = {r["model"]: r["status"] for r in run.read_results() if r["variant"] == "fp32"}
    assert rows["resnet50"].startswith("skipped: WeightsUnavailableError") and rows["simple_cnn"] == "ok"
    assert "skipped: WeightsUnavailableError" in run.report_html.read_text()
