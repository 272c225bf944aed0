"""Classify image files with a deployment bundle: ONNX Runtime, NumPy and Pillow only.

This file is also every bundle's ``predict.py`` (the bundle writer copies it unchanged, beside
``preprocess.py``), so ``scenelib predict`` and a bundle copied to another machine run the same code.

A bundle is a folder holding ``bundle.json`` (format version, model, variants with their files and
SHA-256, the recommended variant, what the run measured), ``labels.json``, ``preprocess.json``,
``preprocess.py``, this file and the ONNX model files. ``Bundle.load`` checks all of it before anything is
classified: a wrong format version, a missing or altered file or a model whose input size is not the
preprocessing's is one ``BundleError`` line (exit 2), and nothing is written.

Inputs are image files, folders (searched recursively for image suffixes) and list files (``--list``: one
path a line, relative to the list's folder). A file that cannot be decoded gets a CSV row with its error
and the run goes on. The CSV (path, top-k classes with probabilities, model, variant, tta, error) goes to
stdout, or to ``--output`` (written to a temporary name and renamed at the end, so an interrupted run
leaves no half file).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

try:  # inside the scenelib package
    from . import preprocess
except ImportError:  # a bundle's predict.py, run as a script (``python -I`` leaves its folder off sys.path)
    sys.dont_write_bytecode = True  # nothing written into the bundle folder
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import preprocess  # type: ignore[no-redef]

FORMAT = 1
BUNDLE_JSON = "bundle.json"
PROGRESS_FROM = 64  # inputs: from this many on, progress lines on stderr
PROGRESS_EVERY_S = 2.0


class BundleError(Exception):
    """The bundle or the inputs cannot be used; the message is one line saying why and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path.parent} is not a complete bundle: {path.name} is missing") from None
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None


@dataclass
class Bundle:
    """A checked bundle: its manifest, class names and preprocessing."""

    root: Path
    meta: dict
    labels: list[str]
    prep: dict

    @classmethod
    def load(cls, root: str | os.PathLike) -> Bundle:
        root = Path(root)
        if not (root / BUNDLE_JSON).is_file():
            raise BundleError(f"{root} is not a bundle (no {BUNDLE_JSON})")
        meta = _read_json(root / BUNDLE_JSON)
        if meta.get("format") != FORMAT:
            raise BundleError(
                f"{root} is a bundle of format {meta.get('format')!r} (written by scenelib "
                f"{meta.get('scenelib_version', '?')}); this predict reads format {FORMAT}: use the predict.py "
                "inside that bundle, or write the bundle again with this scenelib"
            )
        for name in meta.get("files", []):
            if not (root / name).is_file():
                raise BundleError(
                    f"{root} is not a complete bundle: {name} is missing; copy the whole folder"
                )
        labels, prep = _read_json(root / "labels.json"), _read_json(root / "preprocess.json")
        if prep.get("version") != preprocess.PREPROCESS_VERSION:
            raise BundleError(
                f"{root}: its preprocessing is version {prep.get('version')!r}, its preprocess.py version "
                f"{preprocess.PREPROCESS_VERSION}; copy the whole folder from one bundle"
            )
        return cls(root, meta, labels, prep)

    @property
    def model(self) -> str:
        return self.meta["model"]

    def variant(self, name: str | None = None) -> tuple[str, dict]:
        """A variant's name and entry (default: the recommended one)."""
        name = name or self.meta["recommended"]
        if name not in self.meta["variants"]:
            raise BundleError(
                f"this bundle has no {name} model; it has {', '.join(self.meta['variants'])} "
                f"(recommended: {self.meta['recommended']})"
            )
        return name, self.meta["variants"][name]

    def session(self, variant: str | None = None, threads: int = 0):
        """An ONNX Runtime session of a variant, its file's SHA-256 and input size checked."""
        import onnxruntime as ort

        name, entry = self.variant(variant)
        path = self.root / entry["file"]
        if sha256_file(path) != entry["sha256"]:
            raise BundleError(f"{path} is not the file this bundle was written with (its SHA-256 differs)")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        shape = session.get_inputs()[0].shape
        size = self.prep["size"]
        if len(shape) != 4 or any(
            isinstance(d, int) and d != want for d, want in zip(shape[1:], (3, size, size))
        ):
            raise BundleError(
                f"{path.name} takes inputs of shape {shape}, but the preprocessing makes 3 x {size} x {size}: "
                "the model and preprocess.json are not from the same bundle"
            )
        return session


def is_image_file(path: Path) -> bool:
    """A file a folder search picks up, as the pipeline's dataset scan does: a suffix Pillow can open, not
    hidden."""
    return path.suffix.lower() in _suffixes() and not path.name.startswith(".") and path.is_file()


@functools.cache
def _suffixes() -> frozenset[str]:
    from PIL import Image

    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def collect(inputs: Sequence[str | os.PathLike], lists: Sequence[str | os.PathLike] = ()) -> list[Path]:
    """Every input file, in order: files as given, folders' images recursively (sorted), list files' lines.
    A path that does not exist, a folder with no image or an empty list is a ``BundleError``."""
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            images = sorted(p for p in item.rglob("*") if is_image_file(p))
            if not images:
                raise BundleError(f"{item} holds no image files (none with a suffix Pillow reads)")
            found += images
        elif item.is_file():
            found.append(item)
        else:
            raise BundleError(f"{item} does not exist")
    for lst in map(Path, lists):
        try:
            lines = lst.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise BundleError(f"cannot read the list {lst}: {exc}") from None
        entries = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not entries:
            raise BundleError(f"the list {lst} names no file")
        found += [p if p.is_absolute() else lst.parent / p for p in map(Path, entries)]
    if not found:
        raise BundleError("no input: name image files, folders or --list files")
    return found


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, str]:
    try:
        return preprocess.load_square(path, size).transpose(2, 0, 1), ""
    except Exception as exc:  # any file Pillow cannot decode: reported in its row, the run goes on
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32) - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def classify(
    bundle: Bundle,
    paths: Sequence[Path],
    variant: str | None = None,
    batch_size: int = 16,
    tta: bool = False,
    threads: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> Iterator[tuple[Path, np.ndarray | None, str]]:
    """(path, class probabilities or None, error) per input, in order. With ``tta`` the probabilities are
    the mean softmax over the run's TTA views (only where the run measured them)."""
    name, entry = bundle.variant(variant)
    views = None
    if tta:
        measured = entry.get("tta")
        if not measured:
            raise BundleError(
                f"--tta: the run measured no test-time augmentation for {bundle.model} {name} "
                f"({entry.get('tta_note') or 'single view only'}); run without --tta"
            )
        views = (measured["preset"], measured["views"])
    session = bundle.session(name, threads)
    input_name = session.get_inputs()[0].name
    size, mean, std = bundle.prep["size"], bundle.prep["mean"], bundle.prep["std"]

    def run(x: np.ndarray) -> np.ndarray:
        return _softmax(session.run(None, {input_name: preprocess.normalize(x, mean, std)})[0])

    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        pending = [pool.submit(lambda b: [_decode(p, size) for p in b], b) for b in batches[:2]]
        for i, batch in enumerate(batches):
            decoded = pending[i].result()
            if i + 2 < len(batches):  # decode ahead while ONNX Runtime runs
                pending.append(pool.submit(lambda b: [_decode(p, size) for p in b], batches[i + 2]))
            ok = [k for k, (arr, _) in enumerate(decoded) if arr is not None]
            probs: dict[int, np.ndarray] = {}
            if ok:
                x = np.stack([decoded[k][0] for k in ok])
                out = np.mean([run(v) for v in preprocess.tta_views(*views, x)], axis=0) if views else run(x)
                probs = dict(zip(ok, out))
            for k, path in enumerate(batch):
                yield path, probs.get(k), decoded[k][1]
            if on_batch:
                on_batch(len(batch))


class Progress:
    """'predict: 120/630 images, 41.2 img/s' on stderr every few seconds, for long inputs only."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.total, self.done, self.t0, self.last = total, 0, time.perf_counter(), 0.0
        self.show = not quiet and total >= PROGRESS_FROM

    @property
    def rate(self) -> float:
        return self.done / max(time.perf_counter() - self.t0, 1e-9)

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.show and (now - self.last >= PROGRESS_EVERY_S or self.done == self.total):
            self.last = now
            print(
                f"predict: {self.done}/{self.total} images, {self.rate:.1f} img/s",
                file=sys.stderr,
                flush=True,
            )


def write_csv(
    out,
    results: Iterable[tuple[Path, np.ndarray | None, str]],
    labels: list[str],
    model: str,
    variant: str,
    top_k: int,
    tta: bool,
) -> tuple[int, int]:
    """The predictions CSV; returns (images classified, inputs with an error)."""
    writer = csv.writer(out, lineterminator="\n")
    ranks = range(1, top_k + 1)
    writer.writerow(
        ["path", *(f"{c}_{r}" for r in ranks for c in ("class", "prob")), "model", "variant", "tta", "error"]
    )
    good = bad = 0
    for path, probs, error in results:
        if probs is None:
            bad += 1
            writer.writerow([str(path), *([""] * 2 * top_k), model, variant, "yes" if tta else "no", error])
            continue
        good += 1
        order = np.argsort(-probs, kind="stable")[:top_k]
        cells = [x for i in order for x in (labels[i], f"{probs[i]:.6f}")]
        writer.writerow([str(path), *cells, model, variant, "yes" if tta else "no", ""])
    return good, bad


def parser(prog: str, model_help: str, model_default: str | None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="Classify images with a scenelib deployment bundle and write a CSV of the top classes: "
        "path, class_1, prob_1, ..., model, variant, tta, error. An unreadable file gets its error in the last "
        "column and the rest go on. Exit status: 0 when at least one image was classified, 1 when none could "
        "be, 2 for a bad bundle, model or input (one line on stderr, nothing written).",
    )
    p.add_argument("inputs", nargs="*", help="image files and folders (searched recursively)")
    p.add_argument("--model", default=model_default, help=model_help)
    p.add_argument(
        "--list",
        action="append",
        default=[],
        metavar="FILE",
        help="a text file naming one image a line (relative to its folder); repeatable",
    )
    p.add_argument(
        "--output",
        "-o",
        default="-",
        metavar="CSV",
        help="where the CSV goes (default: stdout); nothing else is ever written",
    )
    p.add_argument("--variant", help="onnx-fp32 or onnx-int8 (default: the run's recommended deployment)")
    p.add_argument("--top-k", type=int, default=3, help="classes per image, most probable first (default 3)")
    p.add_argument("--batch-size", type=int, default=16, help="images per ONNX Runtime call (default 16)")
    p.add_argument(
        "--tta",
        action="store_true",
        help="mean softmax over the run's test-time views; only where the run measured TTA",
    )
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (default: all cores)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress or summary on stderr")
    return p


def predict(args: argparse.Namespace, bundle: Bundle) -> int:
    """Check everything, then classify and write the CSV; returns the exit status."""
    if args.top_k < 1 or args.batch_size < 1:
        raise BundleError("--top-k and --batch-size must be at least 1")
    paths = collect(args.inputs, args.list)
    variant, _ = bundle.variant(args.variant)
    progress = Progress(len(paths), args.quiet)
    results = classify(bundle, paths, variant, args.batch_size, args.tta, args.threads, progress)
    first = next(results)  # the session is made and checked here, before anything is written
    top_k = min(args.top_k, len(bundle.labels))
    rows = (r for chunk in ([first], results) for r in chunk)
    if args.output == "-":
        good, bad = write_csv(sys.stdout, rows, bundle.labels, bundle.model, variant, top_k, args.tta)
    else:
        out = Path(args.output)
        if out.is_dir():
            raise BundleError(f"--output {out} is a folder: name a CSV file")
        fd, tmp = tempfile.mkstemp(
            dir=out.parent if str(out.parent) else ".", prefix=f".{out.name}.", suffix=".tmp"
        )
        try:
            with open(fd, "w", newline="", encoding="utf-8") as fh:
                good, bad = write_csv(fh, rows, bundle.labels, bundle.model, variant, top_k, args.tta)
            os.replace(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    if not args.quiet:
        where = "stdout" if args.output == "-" else args.output
        print(
            f"predict: {good} images classified with {bundle.model} {variant}"
            + (" (TTA)" if args.tta else "")
            + (f", {bad} could not be read (see the error column)" if bad else "")
            + f", {progress.rate:.1f} img/s -> {where}",
            file=sys.stderr,
        )
    return 0 if good else 1


def main(argv: Sequence[str] | None = None, prog: str = "predict.py") -> int:
    """A bundle's own command line: ``python predict.py IMAGES... [--output CSV]`` (``--model`` defaults to
    the folder this file is in)."""
    here = str(Path(__file__).resolve().parent)
    args = parser(prog, f"the bundle folder (default: {here})", here).parse_args(argv)
    try:
        return predict(args, Bundle.load(args.model))
    except BundleError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
