"""Decoding, resizing, normalisation and augmentation.

Images are decoded and resized once into a uint8 tensor (``decode_images``); every later step (augmentation,
feature caching, evaluation, benchmarking) works on that tensor, so decoding is never the bottleneck. Decoding
itself (EXIF orientation, RGB, centre crop, bilinear resize) is ``deploy/preprocess.py``, the code path the
deployment bundles carry.

Augmentation presets:

- ``none``: the image as is.
- ``light``: horizontal flips.
- ``seed``: random resized crop (zoom), flips, rotation +-15 degrees, brightness and contrast 0.8-1.2.
- ``aerial``: the 8 dihedral flips/rotations, exact symmetries of top-down imagery.

Each preset also defines a fixed list of *views* (deterministic, or seeded for ``seed``) used for cached
training and for test-time augmentation (TTA).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from torchvision.transforms import v2

from .deploy.preprocess import HIGH_BIT_MODES, load_square, to_rgb  # noqa: F401 (re-exported)

AUGMENTATIONS = ("none", "light", "seed", "aerial")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED_VIEWS = 8  # seeded random views cached per image for the "seed" preset

View = Callable[[torch.Tensor], torch.Tensor]


def check_augmentation(name: str) -> None:
    if name not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {name!r}; valid: {', '.join(AUGMENTATIONS)}")


def decode_images(paths: Sequence[str | Path], size: int, workers: int = 2) -> torch.Tensor:
    """All images as one uint8 tensor [N, 3, size, size] (threads: Pillow releases the GIL)."""
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, arr in enumerate(pool.map(lambda p: load_square(p, size), paths)):
            out[i] = torch.from_numpy(arr).permute(2, 0, 1)
    return out


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 [N,3,H,W] (or float in [0,1]) -> normalised float32."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """The k-th of the 8 dihedral transforms (k % 4 quarter turns, then a flip if k >= 4)."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def _seed_pipeline(size: int) -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(brightness=(0.8, 1.2), contrast=(0.8, 1.2)),
        ]
    )


def views(preset: str, size: int, seed: int = 0) -> list[View]:
    """The fixed views of a preset; the first is always the identity (the single-view evaluation)."""
    check_augmentation(preset)
    if preset == "aerial":
        return [lambda x, k=k: dihedral(x, k) for k in range(8)]
    if preset == "light":
        return [lambda x: x, lambda x: torch.flip(x, dims=(-1,))]
    if preset == "seed":
        pipeline = _seed_pipeline(size)

        def seeded(x: torch.Tensor, k: int) -> torch.Tensor:
            # Reseeded per image: view k is the same transform for every image, whatever batch it is in
            # (the feature cache computes views in batches of different images).
            gen_state = torch.random.get_rng_state()
            try:
                out = []
                for img in x:
                    torch.manual_seed(seed * 1000 + k)
                    out.append(pipeline(img))
                return torch.stack(out)
            finally:
                torch.random.set_rng_state(gen_state)

        return [lambda x: x] + [lambda x, k=k: seeded(x, k) for k in range(1, SEED_VIEWS)]
    return [lambda x: x]


def random_augment(preset: str, size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Per-sample random augmentation of a uint8 batch, for training without a feature cache."""
    check_augmentation(preset)
    if preset == "aerial":
        return lambda x: torch.stack(
            [dihedral(img, int(k)) for img, k in zip(x, torch.randint(0, 8, (len(x),)))]
        )
    if preset == "light":
        return lambda x: torch.stack(
            [torch.flip(img, (-1,)) if f else img for img, f in zip(x, torch.rand(len(x)) < 0.5)]
        )
    if preset == "seed":
        pipeline = _seed_pipeline(size)
        return lambda x: torch.stack([pipeline(img) for img in x])
    return lambda x: x
