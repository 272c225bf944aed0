"""Fine-tuning on a CPU: freeze a prefix, cache its outputs for every view, train the rest.

Strategies: ``linear`` (frozen backbone, new head), ``partial`` (last N blocks + head), ``full`` (all blocks)
and ``scratch`` (all blocks from random initialisation). The first two train on the feature cache
(``features.py``); the last two run the whole network with on-the-fly augmentation.

AdamW, cross-entropy (label smoothing, optional class weights), one-cycle or ReduceLROnPlateau on the
validation loss, full history per epoch. The budget is counted in optimiser steps (``default_epochs``), so a
small dataset gets more passes than a large one; the kept weights are the last epoch's (``keep="last"``,
the end of the one-cycle schedule), because a small validation split cannot tell epochs apart reliably;
``keep="best_val"`` keeps the epoch with the best validation accuracy (with early stopping).
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from . import progress
from .devices import amp_dtype, autocast, grad_scaler, prepare
from .features import BULK_BATCH, device_runner, extract_views, make_runner, spilling_allocator
from .hardware import cpu_features
from .models import AUX_LOSS_WEIGHT, STRATEGIES, HeadConfig, ModelSpec, SceneClassifier
from .probe import linear_probe, pooled_features
from .transforms import View, check_augmentation, normalize, random_augment, views

SCHEDULERS = ("onecycle", "plateau")
KEEP_RULES = ("last", "best_val")
# The epoch budget when a run does not set one (run_all.py --epochs), per strategy: the fewest epochs a run
# trains (benchmarks/epoch_budget.py), raised for small datasets until the run makes MIN_STEPS optimiser
# steps, and never above MAX_EPOCHS (benchmarks/panel.py chose these on several datasets and subset sizes).
DEFAULT_EPOCHS = {"linear": 12, "partial": 8, "full": 12, "scratch": 12}
MIN_STEPS = 360
MAX_EPOCHS = 60


def default_epochs(strategy: str, n_train: int, batch_size: int = 32) -> int:
    """The strategy's epoch floor, raised so that a run of ``n_train`` images makes ``MIN_STEPS`` steps."""
    steps_per_epoch = max(1, -(-n_train // batch_size))
    return min(MAX_EPOCHS, max(DEFAULT_EPOCHS[strategy], -(-MIN_STEPS // steps_per_epoch)))

DEVICE_CACHE_BATCH = 16  # images per call of the frozen prefix on a GPU (the CPU's is features.BULK_BATCH)


@dataclass
class TrainConfig:
    strategy: str = "partial"
    epochs: int = 12
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    class_weights: bool = False
    augmentation: str = "aerial"
    scheduler: str = "onecycle"
    keep: str = "last"  # which epoch's weights are kept: KEEP_RULES
    patience: int = 5  # early stopping, with keep="best_val" only
    views_per_epoch: int = 1  # cached strategies: passes over the training images per epoch, each in a view
    trainable_blocks: int | None = None  # None: the registry's default for the model
    tta: bool = True
    seed: int = 0
    engine: str = "onnx"  # what runs the frozen prefix when caching on the CPU
    device: str = "cpu"  # a resolved torch device (devices.resolve_device): cpu, cuda:N, mps
    cpu_bf16: bool = False  # bf16 autocast on the CPU too (GPUs always use mixed precision)
    linear_probe: bool = True  # the frozen-features baseline (probe.py), for cached strategies
    head: HeadConfig = field(default_factory=HeadConfig)

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; valid: {', '.join(STRATEGIES)}")
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {self.scheduler!r}; valid: {', '.join(SCHEDULERS)}")
        if self.keep not in KEEP_RULES:
            raise ValueError(f"unknown kept-epoch rule {self.keep!r}; valid: {', '.join(KEEP_RULES)}")
        if self.views_per_epoch < 1:
            raise ValueError("views_per_epoch must be at least 1")
        check_augmentation(self.augmentation)
        if self.epochs < 1:
            raise ValueError("epochs must be at least 1")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SplitData:
    images: torch.Tensor  # uint8 [N, 3, S, S]
    labels: torch.Tensor  # int64 [N]


@dataclass
class TrainResult:
    model: SceneClassifier
    history: list[dict]
    best_epoch: int
    cut: int
    train_seconds: float
    cache_seconds: float
    cache_engine: str
    test_probs: np.ndarray  # [V, N, C]: softmax per test view; view 0 is the plain image
    val_probs: np.ndarray  # [V, N, C]: softmax per validation view, as test_probs (view 0: the ensemble's)
    trainable_params: int
    probe: dict | None = None  # the linear-probe baseline (probe.linear_probe), if run
    layout: str = "contiguous"  # the memory format the trainable part trained in (training_layout)


CPU = torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def cut_point(model: SceneClassifier, spec: ModelSpec, cfg: TrainConfig) -> int:
    """Number of frozen leading blocks for the strategy."""
    n = len(model.blocks)
    if cfg.strategy == "linear":
        return n
    if cfg.strategy == "partial":
        k = spec.trainable_blocks if cfg.trainable_blocks is None else cfg.trainable_blocks
        return max(0, n - k)
    return 0


def trainable_part(model: SceneClassifier, cut: int) -> nn.Module:
    """What the optimiser updates: the head alone for ``linear`` (pooled features), else the suffix."""
    return model.head if cut == len(model.blocks) else model.suffix(cut)


def frozen_prefix(model: SceneClassifier, cut: int) -> nn.Module:
    prefix = nn.Sequential(*model.blocks[:cut])
    return nn.Sequential(prefix, model.pool) if cut == len(model.blocks) else prefix


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _loss_fn(cfg: TrainConfig, labels: torch.Tensor, n_classes: int) -> nn.CrossEntropyLoss:
    weight = None
    if cfg.class_weights:
        counts = torch.bincount(labels, minlength=n_classes).float().clamp(min=1)
        weight = counts.sum() / (n_classes * counts)
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=cfg.label_smoothing)


def _evaluate(
    net: nn.Module, batches, loss_fn, device=CPU, dtype=None, layout=torch.contiguous_format
) -> tuple[float, float]:
    net.eval()
    total, correct, loss = 0, 0, 0.0
    with torch.inference_mode(), autocast(device, dtype):
        for x, y in batches:
            x, y = x.to(device, memory_format=layout), y.to(device)
            logits = net(x).float()
            loss += loss_fn(logits, y).item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            total += len(y)
    return loss / total, correct / total


def fit(
    net: nn.Module,
    train_batch: Callable[[torch.Tensor, int], torch.Tensor],
    train_labels: torch.Tensor,
    val_batches: Callable[[], list[tuple[torch.Tensor, torch.Tensor]]],
    cfg: TrainConfig,
    n_classes: int,
    desc: str = "train",
    on_epoch: Callable[[nn.Module], dict] | None = None,
    layout: torch.memory_format = torch.contiguous_format,
) -> tuple[list[dict], int]:
    """The epoch loop. ``train_batch(indices, epoch)`` returns that batch's (augmented) inputs (epochs
    count from 0).

    Returns the history and the kept epoch (``cfg.keep``); ``net`` ends holding its weights. ``on_epoch(net)`` adds
    its entries to each epoch's history after the epoch is timed (benchmarks record test accuracy per epoch
    this way; nothing is chosen on them).
    """
    device = torch.device(cfg.device)
    dtype = amp_dtype(device, cfg.cpu_bf16)
    scaler = grad_scaler(device, dtype)
    params = [p for p in net.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = (len(train_labels) + cfg.batch_size - 1) // cfg.batch_size
    if cfg.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimiser, cfg.lr, epochs=cfg.epochs, steps_per_epoch=steps
        )
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimiser, factor=0.3, patience=1)
    loss_fn = _loss_fn(cfg, train_labels, n_classes).to(device)
    history: list[dict] = []
    best = (-1.0, float("inf"))
    best_state, best_epoch, stale = None, 0, 0
    epochs = progress.bar(range(1, cfg.epochs + 1), desc=desc, unit="epoch")
    for epoch in epochs:
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(train_labels))
        seen, correct, running = 0, 0, 0.0
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2 and seen:  # BatchNorm cannot train on a batch of one
                continue
            x = train_batch(idx, epoch - 1).to(device, non_blocking=True, memory_format=layout)
            y = train_labels[idx].to(device)
            with autocast(device, dtype):
                out = net(x)
                logits, aux = out if isinstance(out, tuple) else (out, None)
                loss = loss_fn(logits.float(), y) + (
                    AUX_LOSS_WEIGHT * loss_fn(aux.float(), y) if aux is not None else 0.0
                )
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            if cfg.scheduler == "onecycle":
                scheduler.step()
            running += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        val_loss, val_acc = _evaluate(net, val_batches(), loss_fn, device, dtype, layout)
        if cfg.scheduler == "plateau":
            scheduler.step(val_loss)
        epochs.set_postfix_str(f"last validation {val_acc:.1%}")
        history.append(
            {
                "epoch": epoch,
                "train_loss": running / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "val_loss": val_loss,
                "val_accuracy": val_acc,
                "lr": optimiser.param_groups[0]["lr"],
                "seconds": time.perf_counter() - start,
            }
        )
        if on_epoch is not None:
            history[-1].update(on_epoch(net))
        if cfg.keep == "last":
            best_epoch = epoch
        elif (val_acc, -val_loss) > (best[0], -best[1]):
            best, best_epoch, stale = (val_acc, val_loss), epoch, 0
            best_state = copy.deepcopy(net.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return history, best_epoch


def train_model(
    model: SceneClassifier,
    spec: ModelSpec,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    train: SplitData,
    val: SplitData,
    test: SplitData,
    n_classes: int,
    cfg: TrainConfig,
    test_each_epoch: bool = False,
) -> TrainResult:
    """Train ``model`` by ``cfg.strategy`` and predict the test set (every TTA view).

    ``test_each_epoch`` records single-view test accuracy in every epoch's history, for time-to-accuracy
    benchmarks only: the kept epoch is still chosen on validation."""
    cfg.check()
    seed_everything(cfg.seed)
    size = train.images.shape[-1]
    cut = cut_point(model, spec, cfg)
    train_views = views(cfg.augmentation, size, cfg.seed)
    test_views: list[View] = train_views if cfg.tta else train_views[:1]
    for p in model.parameters():
        p.requires_grad_(True)
    for p in model.blocks[:cut].parameters():
        p.requires_grad_(False)

    device = torch.device(cfg.device)
    prepare(device)
    model.to(device)
    start = time.perf_counter()
    if cut > 0:
        prefix = frozen_prefix(model, cut)
        if device.type == "cpu":
            runner, engine = make_runner(prefix, size, engine=cfg.engine)
            batch = BULK_BATCH
        else:
            runner, engine = device_runner(prefix, device, amp_dtype(device)), f"torch on {device}"
            batch = DEVICE_CACHE_BATCH
        # Each pass shows every training image in one random view, drawn here for all epochs at once, so
        # the cache holds only the (view, image) pairs some epoch will use (and the plain view, which the
        # linear probe reads): 8 views over 8 epochs leave about a third of the pairs never drawn.
        drawn = draw_views(len(train_views), cfg.epochs, cfg.views_per_epoch, len(train.labels), cfg.seed)
        splits = {"train": train, "val": val, "test": test}
        cache = feature_cache(
            runner, splits, mean, std, train_views, test_views, batch, needed_pairs(drawn, len(train_views))
        )
        n_train = len(train.labels)
        cache_seconds = time.perf_counter() - start
        probe = None
        if cfg.linear_probe:  # before fine-tuning touches the suffix: its pretrained weights
            probe = _probe(model, cut, cache, (train.labels, val.labels, test.labels), device, cfg.seed)
        net = trainable_part(model, cut)

        def train_batch(idx: torch.Tensor, epoch: int) -> torch.Tensor:
            image = idx % n_train
            return cache["train"][drawn[epoch * cfg.views_per_epoch + idx // n_train, image], image].float()

        def split_batches(name: str, labels: torch.Tensor, view: int = 0):
            feats = cache[name][view]
            return [(feats[i : i + 32].float(), labels[i : i + 32]) for i in range(0, len(labels), 32)]
    else:
        engine, cache_seconds, net, probe = "none", 0.0, model, None
        augment = random_augment(cfg.augmentation, size)
        n_train = len(train.labels)

        def train_batch(idx: torch.Tensor, epoch: int) -> torch.Tensor:
            return normalize(augment(train.images[idx % n_train]), mean, std)

        def split_batches(name: str, labels: torch.Tensor, view: int = 0):
            images = {"val": val.images, "test": test.images}[name]
            return [
                (normalize(test_views[view](images[i : i + 64]), mean, std), labels[i : i + 64])
                for i in range(0, len(labels), 64)
            ]

    layout = training_layout(cut, len(model.blocks), device)
    net.to(memory_format=layout)
    history, best_epoch = fit(
        net,
        train_batch,
        train.labels.repeat(cfg.views_per_epoch),
        lambda: split_batches("val", val.labels),
        cfg,
        n_classes,
        desc=spec.name,
        on_epoch=(
            (
                lambda net: {
                    "test_accuracy": _evaluate(
                        net, split_batches("test", test.labels), nn.CrossEntropyLoss(), device, layout=layout
                    )[1]
                }
            )
            if test_each_epoch
            else None
        ),
        layout=layout,
    )
    train_seconds = time.perf_counter() - start
    net.eval()

    def softmax(name: str, labels: torch.Tensor, view: int) -> np.ndarray:
        batches = split_batches(name, labels, view)
        return torch.cat(
            [net(x.to(device, memory_format=layout)).float().softmax(1).cpu() for x, _ in batches]
        ).numpy()

    with torch.inference_mode():  # predictions in fp32 on the device: what the checkpoint will give
        probs = [softmax("test", test.labels, v) for v in range(len(test_views))]
        val_probs = [softmax("val", val.labels, v) for v in range(len(test_views))]
    model.to("cpu", memory_format=torch.contiguous_format)  # checkpoints, benchmarks and INT8: CPU work
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = count_params(net)
    return TrainResult(
        model.eval(),
        history,
        best_epoch,
        cut,
        train_seconds,
        cache_seconds,
        engine,
        np.stack(probs),
        np.stack(val_probs),
        trainable,
        probe,
        "channels_last" if layout == torch.channels_last else "contiguous",
    )


def training_layout(cut: int, n_blocks: int, device: torch.device) -> torch.memory_format:
    """The memory format the trainable part trains in. channels_last is oneDNN's and cuDNN's fast layout
    for whole networks (``cut`` 0: simple_cnn trains about a quarter faster in it on a CPU) and for any
    image-like suffix on CUDA. A suffix on cached features, on a CPU, depends on the CPU: on a 2-core AVX2
    EPYC, MobileNetV2's blocks 14-18 trained 22% faster a step in it (415 vs 535 ms at batch 32, interleaved)
    and EfficientNet-Lite0's last stage 6% faster, while on an AVX-512 Xeon it was as fast or slower; so it
    is used on x86 CPUs with AVX2 and without AVX-512. A linear head reads pooled (2-D) features, which have
    no channels_last. The layout changes float rounding only, so a run stays reproducible on one machine."""
    if cut == n_blocks:
        return torch.contiguous_format
    if cut == 0 or device.type == "cuda":
        return torch.channels_last
    features = cpu_features()
    if device.type == "cpu" and features["avx2"] and not features["avx512f"]:
        return torch.channels_last
    return torch.contiguous_format


def feature_cache(
    runner: Callable[[np.ndarray], np.ndarray],
    splits: dict[str, SplitData],
    mean,
    std,
    train_views: list[View],
    test_views: list[View],
    batch: int = BULK_BATCH,
    needed: list[torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """The frozen prefix's outputs per split, [V, N, ...] fp16: training images in every view of
    ``train_views`` (only the ``needed`` pairs, if given: ``needed_pairs``), validation and test in every
    ``test_views`` view (TTA, which validation decides on). Beyond the RAM budget (``memory.py``) the
    arrays are memory-mapped files (``features.spilling_allocator``)."""
    alloc = spilling_allocator()
    return {
        "train": extract_views(
            runner, splits["train"].images, mean, std, train_views, batch, "cache train", needed, allocate=alloc
        ),
        "val": extract_views(
            runner, splits["val"].images, mean, std, test_views, batch, desc="cache val", allocate=alloc
        ),
        "test": extract_views(
            runner, splits["test"].images, mean, std, test_views, batch, desc="cache test", allocate=alloc
        ),
    }


def draw_views(n_views: int, epochs: int, per_epoch: int, n_images: int, seed: int) -> torch.Tensor:
    """The view of each image in each pass, [epochs * per_epoch, n_images]: random, except that an epoch
    of ``per_epoch == n_views`` passes shows every image in every view once."""
    generator = torch.Generator().manual_seed(seed)
    if per_epoch == n_views:
        keys = torch.rand((epochs, n_views, n_images), generator=generator)
        return keys.argsort(dim=1).reshape(epochs * n_views, n_images)
    return torch.randint(0, n_views, (epochs * per_epoch, n_images), generator=generator)


def needed_pairs(drawn: torch.Tensor, n_views: int) -> list[torch.Tensor]:
    """Per view, the images whose features some epoch of ``drawn`` [epochs, images] reads; every image's
    plain view (view 0) is always included."""
    used = torch.zeros((n_views, drawn.shape[1]), dtype=torch.bool)
    used[drawn, torch.arange(drawn.shape[1]).expand_as(drawn)] = True
    used[0] = True
    return [torch.nonzero(row).flatten() for row in used]


def _probe(model: SceneClassifier, cut: int, cache: dict, labels: tuple, device, seed: int) -> dict:
    """The linear probe on the pretrained suffix's pooled features of the plain view (see probe.py)."""
    rest = nn.Sequential(*model.blocks[cut:], model.pool) if cut < len(model.blocks) else nn.Identity()
    rest.eval()
    feats = [
        pooled_features(lambda x: rest(x.to(device)).float().cpu(), cache[split][0])
        for split in ("train", "val", "test")
    ]
    return linear_probe(*((f, y.numpy()) for f, y in zip(feats, labels, strict=True)), seed=seed)
