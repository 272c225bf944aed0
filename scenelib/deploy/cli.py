"""``scenelib predict`` (also ``python -m scenelib predict``): classify images with a run's or a bundle's
model and write a CSV. The work is ``runtime.predict``, the code every bundle's ``predict.py`` runs; this
adds finding the bundle of a run directory."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from . import runtime

USAGE = """usage: scenelib predict [IMAGES_OR_FOLDERS ...] [--model RUN_OR_BUNDLE] [--output CSV] [options]

commands:
  predict   classify images with a run's recommended deployment (or a bundle) and write a CSV of the top
            classes; 'scenelib predict --help' lists the options
"""
MODEL_HELP = (
    "a deployment bundle folder, or a run directory (its deploy/<model>/ bundle: the best model unless "
    "--model-name says another). Default: $SCENELIB_RUN_DIR, else the newest reports/<dataset>/latest"
)


def _run_dir(path: str):
    from ..rundir import open_run

    try:
        return open_run(path)
    except FileNotFoundError as exc:
        raise runtime.BundleError(str(exc)) from None


def resolve(model: str | None, model_name: str | None, scratch: Path) -> Path:
    """The bundle folder to use. A run directory without a bundle for the model (a run from before bundles
    existed) gets one written under ``scratch``, never inside the run directory."""
    if model and (Path(model) / runtime.BUNDLE_JSON).is_file():
        if model_name:
            raise runtime.BundleError("--model-name chooses a model of a run directory; --model is a bundle")
        return Path(model)
    if model and not Path(model).is_dir():
        raise runtime.BundleError(f"--model {model} does not exist")
    run = _run_dir(model or "")
    from ..rundir import read_json

    index = run.root / "deploy" / "index.json"
    trained = run.trained_models()
    if model_name is None:
        model_name = read_json(index)["default"] if index.is_file() else None
    if model_name is None:
        from ..claims import claims

        facts = claims(run)
        if not facts:
            raise runtime.BundleError(f"{run.root} has no trained model")
        model_name = facts["best"]
    if model_name not in trained:
        raise runtime.BundleError(
            f"{run.root} has no trained model {model_name!r}; trained: {', '.join(trained) or 'none'}"
        )
    bundle = run.root / "deploy" / model_name
    if (bundle / runtime.BUNDLE_JSON).is_file():
        return bundle
    from .bundle import write_bundle

    written = write_bundle(run, model_name, scratch / model_name)
    if written is None:
        raise runtime.BundleError(f"{model_name} in {run.root} has no ONNX export to deploy")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] != "predict":
        print(f"error: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
        return 2
    parser = runtime.parser("scenelib predict", MODEL_HELP, None)
    parser.add_argument(
        "--model-name", help="with a run directory: which trained model (default: the report's best)"
    )
    args = parser.parse_args(argv[1:])
    try:
        with tempfile.TemporaryDirectory(prefix="scenelib-bundle-") as scratch:
            bundle = runtime.Bundle.load(resolve(args.model, args.model_name, Path(scratch)))
            return runtime.predict(args, bundle)
    except runtime.BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
