"""Deployment bundles and ``scenelib predict``: one real tiny run on non-square images of mixed sizes and
modes (grey, RGBA, palette, 16-bit, EXIF-rotated), then the bundle's predictions against the run's own."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scenelib.deploy import preprocess, runtime
from scenelib.deploy.cli import main as scenelib_main
from scenelib.evaluation import Predictions
from scenelib.rundir import RunDir, read_json

CLASSES = ["alpha", "beta", "gamma"]
SIZES = [
    (70, 40),
    (40, 90),
    (96, 57),
    (33, 77),
    (120, 64),
    (50, 51),
    (81, 30),
    (45, 100),
    (64, 88),
    (110, 47),
]
KINDS = ["rgb", "grey", "rgba", "palette", "grey16", "exif", "jpeg", "rgb", "grey", "exif"]
EXIF_ORIENTATION = 0x0112


def write_mixed_image(path_stem: Path, kind: str, size: tuple[int, int], channel: int, rng) -> Path:
    """A noise image whose dominant channel encodes the class, saved in the mode ``kind`` names."""
    w, h = size
    arr = rng.integers(0, 90, (h, w, 3), dtype=np.uint8)
    arr[..., channel] += 140
    arr[: h // 4, : w // 4] = 255  # a bright corner: a wrong rotation or crop changes the input
    rgb = Image.fromarray(arr)
    if kind == "grey":
        path = path_stem.with_suffix(".png")
        rgb.convert("L").save(path)
    elif kind == "rgba":
        path = path_stem.with_suffix(".png")
        rgba = rgb.convert("RGBA")
        rgba.putalpha(Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8)))
        rgba.save(path)
    elif kind == "palette":
        path = path_stem.with_suffix(".gif")
        rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(path)
    elif kind == "grey16":
        path = path_stem.with_suffix(".png")
        grey = np.asarray(rgb.convert("L"), dtype=np.uint16) * 257
        Image.fromarray(grey).save(path)  # 16-bit grey PNG
    elif kind == "exif":
        path = path_stem.with_suffix(".jpg")
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = 6  # shown rotated 90 degrees clockwise
        rgb.save(path, exif=exif.tobytes(), quality=95)
    elif kind == "jpeg":
        path = path_stem.with_suffix(".jpg")
        rgb.save(path, quality=90)
    else:
        path = path_stem.with_suffix(".png")
        rgb.save(path)
    return path


@pytest.fixture(scope="module")
def mixed_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mixed") / "images"
    rng = np.random.default_rng(3)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i, (kind, size) in enumerate(zip(KINDS, SIZES)):
            write_mixed_image(root / name / f"{name}{i:02d}", kind, size, c, rng)
    return root


@pytest.fixture(scope="module")
def deployed_run(mixed_dataset, tmp_path_factory) -> RunDir:
    """A real tiny pipeline run on the mixed images: two models, one epoch, 96 px, quick INT8."""
    from scenelib.pipeline import main

    out = tmp_path_factory.mktemp("deploy-run") / "run"
    args = ["--dataset", "folder", "--data-dir", str(mixed_dataset), "--models", "simple_cnn,mobilenet_v2"]
    args += ["--epochs", "1", "--quick", "--calibration-images", "16", "--input-size", "96"]
    args += ["--threads", "2", "--output", str(out)]
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        code = main(args)
    assert code == 0, log.getvalue()[-3000:]
    return RunDir(out)


def bundles_of(run: RunDir) -> dict[str, Path]:
    index = read_json(run.root / "deploy" / "index.json")
    return {m: run.root / p for m, p in index["bundles"].items()}


def test_load_square_applies_exif_orientation_and_crops_the_centre(tmp_path):
    rng = np.random.default_rng(0)
    path = write_mixed_image(tmp_path / "rotated", "exif", (90, 40), 0, rng)
    with Image.open(path) as img:
        upright = img.transpose(Image.Transpose.ROTATE_270).convert("RGB")  # what orientation 6 shows
    assert upright.size == (40, 90)
    expected = np.array(upright.crop((0, 25, 40, 65)).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(preprocess.load_square(path, 32), expected)


def test_the_array_tta_views_are_the_pipelines_views():
    import torch

    from scenelib.transforms import views

    x = np.random.default_rng(1).integers(0, 255, (2, 3, 8, 8), dtype=np.uint8)
    for preset, n in (("aerial", 8), ("light", 2)):
        ours = preprocess.tta_views(preset, n, x)
        theirs = [v(torch.from_numpy(x)).numpy() for v in views(preset, 8)]
        assert len(ours) == len(theirs) == n
        for a, b in zip(ours, theirs):
            np.testing.assert_array_equal(a, b)


def test_the_bundle_predicts_what_the_run_measured(deployed_run):
    """Parity: each bundled variant's predictions on the run's test images equal the run's own single-view
    evaluation of that variant, image for image; and on every image of the dataset (each size and mode) the
    bundle equals the pipeline's own decode-normalise-run path."""
    from scenelib.decoded import images_of
    from scenelib.features import ort_session
    from scenelib.splits import read_manifest
    from scenelib.stages.variants import ort_runner, predict

    run = deployed_run
    bundles = bundles_of(run)
    assert bundles and next(iter(bundles)) == read_json(run.root / "deploy" / "index.json")["default"]
    manifest = read_manifest(run.splits_csv)
    for model, path in bundles.items():
        bundle = runtime.Bundle.load(path)
        assert bundle.labels == read_json(run.data_summary_json)["classes"]
        for variant in bundle.meta["variants"]:
            ours = Predictions.load(run.predictions(model, variant))
            got = list(runtime.classify(bundle, [Path(p) for p in ours.paths], variant, batch_size=4))
            assert [str(p) for p, _, _ in got] == list(ours.paths) and all(not e for _, _, e in got)
            probs = np.stack([p for _, p, _ in got])
            np.testing.assert_array_equal(probs.argmax(1), ours.single.argmax(1))
            np.testing.assert_allclose(probs, ours.single, atol=1e-4, rtol=0)
        size, mean, std = bundle.prep["size"], bundle.prep["mean"], bundle.prep["std"]
        session = ort_session(str(path / bundle.meta["variants"]["onnx-fp32"]["file"]), 2)
        pipeline = predict(
            ort_runner(session), images_of(manifest, manifest, size), mean, std, [lambda x: x]
        )[0]
        got = np.stack(
            [p for _, p, _ in runtime.classify(bundle, [Path(r.path) for r in manifest], "onnx-fp32")]
        )
        np.testing.assert_allclose(got, pipeline, atol=1e-5, rtol=0)
    modes = set()
    for r in manifest:
        with Image.open(r.path) as img:
            modes.add(img.mode)
            assert img.size[0] != img.size[1]
    assert {"L", "RGBA", "P", "RGB"} <= modes and modes & {"I;16", "I"}


def test_the_bundle_is_self_contained_and_documented(deployed_run):
    run = deployed_run
    facts_best = read_json(run.root / "deploy" / "index.json")["default"]
    path = bundles_of(run)[facts_best]
    meta = read_json(path / "bundle.json")
    assert sorted(meta["files"] + ["bundle.json"]) == sorted(p.name for p in path.iterdir())
    assert (path / "preprocess.py").read_text() == Path(preprocess.__file__).read_text()
    assert (path / "predict.py").read_text() == Path(runtime.__file__).read_text()
    prep = read_json(path / "preprocess.json")
    train = read_json(run.train_json(facts_best))
    assert (prep["size"], prep["mean"], prep["std"]) == (train["input_size"], train["mean"], train["std"])
    assert prep["resample"] == "bilinear" and prep["exif_transpose"] is True
    card = (path / "README.md").read_text()
    default = meta["variants"][meta["recommended"]]
    for needle in (
        default["sha256"],
        "95% CI",
        "INT8",
        "Licence",
        "threads",
        meta["command"],
        "alpha, beta, gamma",
    ):
        assert needle in card
    html = run.report_html.read_text()
    assert f"deploy/{facts_best}/" in html and "predictions.csv" in html and "some_image.png" not in html


def test_predict_writes_a_csv_and_reports_unreadable_files(deployed_run, mixed_dataset, tmp_path, capsys):
    run = deployed_run
    folder = tmp_path / "new"
    shutil.copytree(mixed_dataset / "beta", folder / "sub")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("skipped: not an image suffix")
    before = sorted(p.name for p in run.root.rglob("*"))
    out = tmp_path / "preds.csv"
    code = scenelib_main(
        ["predict", str(folder), "--model", str(run.root), "--output", str(out), "--top-k", "2"]
    )
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 11 and sorted(p.name for p in run.root.rglob("*")) == before
    assert list(rows[0]) == [
        "path",
        "class_1",
        "prob_1",
        "class_2",
        "prob_2",
        "model",
        "variant",
        "tta",
        "error",
    ]
    broken = next(r for r in rows if r["path"].endswith("broken.png"))
    assert broken["error"] and not broken["class_1"]
    good = [r for r in rows if not r["error"]]
    assert all(r["class_1"] in CLASSES and 0 <= float(r["prob_1"]) <= 1 for r in good)
    index = read_json(run.root / "deploy" / "index.json")
    bundle = read_json(run.root / index["bundles"][index["default"]] / "bundle.json")
    assert {r["variant"] for r in rows} == {bundle["recommended"]} and {r["model"] for r in rows} == {
        index["default"]
    }
    assert "1 could not be read" in capsys.readouterr().err
    # a list file, to stdout; TTA only where the run measured it
    (tmp_path / "list.txt").write_text("new/sub/beta00.png\n# a comment\n\nnew/sub/beta01.png\n")
    entry = bundle["variants"][bundle["recommended"]]
    code = scenelib_main(["predict", "--list", str(tmp_path / "list.txt"), "--model", str(run.root), "-q"])
    printed = capsys.readouterr()
    assert code == 0 and len(printed.out.strip().splitlines()) == 3 and not printed.err
    code = scenelib_main(["predict", str(folder / "sub"), "--model", str(run.root), "--tta", "-q"])
    printed = capsys.readouterr()
    if entry["tta"]:
        assert code == 0 and ",yes," in printed.out
    else:
        assert code == 2 and "--tta" in printed.err and not printed.out


@pytest.mark.parametrize("damage", ["format", "missing", "size", "empty_folder", "altered"])
def test_a_bad_bundle_or_input_is_one_line_exit_2_and_nothing_written(deployed_run, tmp_path, capsys, damage):
    run = deployed_run
    bundle = tmp_path / "bundle"
    shutil.copytree(next(iter(bundles_of(run).values())), bundle)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (30, 20)).save(images / "a.png")
    meta = read_json(bundle / "bundle.json")
    model_file = bundle / meta["variants"][meta["recommended"]]["file"]
    if damage == "format":
        meta["format"] = runtime.FORMAT + 1
        (bundle / "bundle.json").write_text(json.dumps(meta))
    elif damage == "missing":
        (bundle / "labels.json").unlink()
    elif damage == "size":
        prep = read_json(bundle / "preprocess.json")
        (bundle / "preprocess.json").write_text(json.dumps({**prep, "size": prep["size"] + 32}))
    elif damage == "empty_folder":
        (images / "a.png").unlink()
        (images / "readme.txt").write_text("no images here")
    elif damage == "altered":
        model_file.write_bytes(model_file.read_bytes()[:-10])
    out = tmp_path / "out" / "preds.csv"
    out.parent.mkdir()
    code = scenelib_main(["predict", str(images), "--model", str(bundle), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert not any(out.parent.iterdir())
    expected = {
        "format": "format",
        "missing": "labels.json is missing",
        "size": "shape",
        "empty_folder": "no image",
        "altered": "SHA-256",
    }[damage]
    assert expected in err


def test_the_bundle_alone_runs_with_only_onnxruntime_numpy_and_pillow(deployed_run, tmp_path):
    """The bundle copied alone to another folder, run as a script by a Python that can import nothing but
    the standard library and onnxruntime, NumPy and Pillow (no site-packages, no scenelib, no torch)."""
    import numpy
    import onnxruntime
    import PIL

    run = deployed_run
    bundle = shutil.copytree(next(iter(bundles_of(run).values())), tmp_path / "elsewhere" / "bundle")
    site = tmp_path / "site"
    site.mkdir()
    for module in (numpy, onnxruntime, PIL):
        folder = Path(module.__file__).parent
        (site / folder.name).symlink_to(folder)
        libs = folder.with_name(f"{module.__name__ if module is not PIL else 'pillow'}.libs")
        if libs.is_dir():
            (site / libs.name).symlink_to(libs)
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
    probe = "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('scenelib'))"
    check = subprocess.run(
        [sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert check.stdout.split() == ["None", "None"], check.stderr
    model = read_json(bundle / "bundle.json")["model"]
    image = Path(Predictions.load(run.predictions(model, "fp32")).paths[0])
    out = tmp_path / "one.csv"
    done = subprocess.run(
        [sys.executable, "-S", str(bundle / "predict.py"), str(image), "--output", str(out)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 1 and rows[0]["class_1"] in CLASSES and not rows[0]["error"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "one.csv", "site"]
    assert sorted(p.name for p in bundle.iterdir()) == sorted(
        read_json(bundle / "bundle.json")["files"] + ["bundle.json"]
    )
