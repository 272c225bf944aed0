"""Model registry: every architecture as a ``SceneClassifier`` = ordered blocks -> global pool -> new head.

Cutting the block list anywhere gives a frozen prefix (run once, cached) and a trainable suffix, which is
what makes ``linear`` and ``partial`` fine-tuning cheap on a CPU. Adding a model is one ``@register`` factory.

A factory returns the ImageNet architecture (with its 1000-class head, random weights); ``weights.py``
loads pretrained tensors into it, and ``to_scene_classifier`` splits it into blocks and replaces the head.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torchvision
from torch import nn

from .transforms import IMAGENET_MEAN, IMAGENET_STD

STRATEGIES = ("linear", "partial", "full", "scratch")


@dataclass(frozen=True)
class HeadConfig:
    """The new classification head: dropout, optional hidden layer (ReLU/LeakyReLU, BatchNorm)."""

    dropout: float = 0.2
    hidden: int = 0
    activation: str = "relu"
    batchnorm: bool = False


def make_head(in_features: int, n_classes: int, cfg: HeadConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    if cfg.hidden:
        layers.append(nn.Linear(width, cfg.hidden))
        if cfg.batchnorm:
            layers.append(nn.BatchNorm1d(cfg.hidden))
        layers.append(nn.LeakyReLU(0.1) if cfg.activation == "leaky_relu" else nn.ReLU())
        width = cfg.hidden
    layers += [nn.Dropout(cfg.dropout), nn.Linear(width, n_classes)]
    return nn.Sequential(*layers)


class SceneClassifier(nn.Module):
    """blocks (an ``nn.Sequential``) -> global average pool -> head.

    ``aux_head``/``aux_after``: Inception-v3's auxiliary classifier, applied (in training only) to the output
    of block ``aux_after``; its loss is weighted by ``AUX_LOSS_WEIGHT`` in training.
    """

    def __init__(
        self,
        blocks: nn.Sequential,
        head: nn.Module,
        aux_head: nn.Module | None = None,
        aux_after: int | None = None,
    ) -> None:
        super().__init__()
        self.blocks = blocks
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = head
        self.aux_head = aux_head
        self.aux_after = aux_after

    def suffix(self, cut: int) -> SceneClassifier:
        """The part after the first ``cut`` blocks (shares parameters), for training on cached features."""
        aux = self.aux_head if self.aux_after is not None and self.aux_after >= cut else None
        after = self.aux_after - cut if aux is not None else None
        return SceneClassifier(self.blocks[cut:], self.head, aux, after)

    def forward(self, x: torch.Tensor):
        aux_out = None
        for i, block in enumerate(self.blocks):
            x = block(x)
            if self.training and self.aux_head is not None and i == self.aux_after:
                aux_out = self.aux_head(x)
        logits = self.head(self.pool(x))
        return (logits, aux_out) if aux_out is not None else logits


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry. ``trainable_blocks``: blocks trained by ``partial`` (besides the head)."""

    name: str
    build: Callable[[], nn.Module]
    split: Callable[[nn.Module], tuple[list[nn.Module], int]]  # -> (blocks, feature width)
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    torchvision_name: str | None = None  # for torchvision's weights API
    trainable_blocks: int = 1
    default_strategy: str = "partial"
    pretrained: bool = True
    aux: Callable[[nn.Module, int], tuple[nn.Module, int]] | None = None  # (aux head, index of its block)
    min_input_size: int = 32  # the smallest --input-size the architecture accepts
    notes: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


MODELS: dict[str, ModelSpec] = {}
AUX_LOSS_WEIGHT = 0.4


def register(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def check_model_name(name: str) -> ModelSpec:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; valid names: {', '.join(sorted(MODELS))}")
    return MODELS[name]


def to_scene_classifier(
    spec: ModelSpec, arch: nn.Module, n_classes: int, head: HeadConfig
) -> SceneClassifier:
    blocks, width = spec.split(arch)
    aux_head, aux_after = spec.aux(arch, n_classes) if spec.aux else (None, None)
    return SceneClassifier(nn.Sequential(*blocks), make_head(width, n_classes, head), aux_head, aux_after)


# -- split functions: the architecture as an ordered list of blocks ---------------------------------------
def _split_resnet(m: nn.Module) -> tuple[list[nn.Module], int]:
    stem = nn.Sequential(m.conv1, m.bn1, m.relu, m.maxpool)
    return [stem, m.layer1, m.layer2, m.layer3, m.layer4], m.fc.in_features


def _split_features(m: nn.Module) -> tuple[list[nn.Module], int]:
    """torchvision MobileNet/EfficientNet: one block per child of ``features``."""
    last = m.classifier[-1]
    return list(m.features.children()), last.in_features


def _split_densenet(m: nn.Module) -> tuple[list[nn.Module], int]:
    f = m.features
    return [
        nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0),
        nn.Sequential(f.denseblock1, f.transition1),
        nn.Sequential(f.denseblock2, f.transition2),
        nn.Sequential(f.denseblock3, f.transition3),
        nn.Sequential(f.denseblock4, f.norm5, nn.ReLU(inplace=True)),
    ], m.classifier.in_features


def _split_at_pools(features: nn.Sequential) -> list[nn.Module]:
    blocks, current = [], []
    for layer in features.children():
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks.append(nn.Sequential(*current))
            current = []
    if current:
        blocks.append(nn.Sequential(*current))
    return blocks


def _split_vgg(m: nn.Module) -> tuple[list[nn.Module], int]:
    """VGG's conv stages; the pretrained 4096-wide FC layers are replaced by pooling and the new head."""
    return _split_at_pools(m.features), 512


def _split_squeezenet(m: nn.Module) -> tuple[list[nn.Module], int]:
    return _split_at_pools(m.features), 512


def _split_inception(m: nn.Module) -> tuple[list[nn.Module], int]:
    return [
        nn.Sequential(m.Conv2d_1a_3x3, m.Conv2d_2a_3x3, m.Conv2d_2b_3x3, m.maxpool1),
        nn.Sequential(m.Conv2d_3b_1x1, m.Conv2d_4a_3x3, m.maxpool2),
        m.Mixed_5b,
        m.Mixed_5c,
        m.Mixed_5d,
        m.Mixed_6a,
        m.Mixed_6b,
        m.Mixed_6c,
        m.Mixed_6d,
        m.Mixed_6e,
        m.Mixed_7a,
        m.Mixed_7b,
        m.Mixed_7c,
    ], m.fc.in_features


def _inception_aux(m: nn.Module, n_classes: int) -> tuple[nn.Module, int]:
    from torchvision.models.inception import InceptionAux

    return InceptionAux(768, n_classes), 9  # after Mixed_6e


def _split_timm_efficientnet(m: nn.Module) -> tuple[list[nn.Module], int]:
    return [
        nn.Sequential(m.conv_stem, m.bn1),
        *m.blocks.children(),
        nn.Sequential(m.conv_head, m.bn2),
    ], m.num_features


class SimpleCNN(nn.Module):
    """A small CNN trained from scratch (conv/BN/ReLU/max-pool blocks): the no-transfer baseline.

    Sized for a CPU: about 0.06 GMac at 64 px, so a dozen epochs on UC Merced take a minute or two.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256)) -> None:
        super().__init__()
        blocks, cin = [], 3
        for w in widths:
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(cin, w, 3, padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ReLU(inplace=True),
                    nn.MaxPool2d(2),
                )
            )
            cin = w
        self.features = nn.Sequential(*blocks)
        self.width = cin


def _tv(name: str, **kwargs) -> Callable[[], nn.Module]:
    return lambda: torchvision.models.get_model(name, weights=None, **kwargs)


def _timm_lite(n: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(f"tf_efficientnet_lite{n}", pretrained=False)

    return build


for _name, _blocks in (("resnet50", 1), ("resnet101", 1), ("resnet152", 1), ("wide_resnet50_2", 1)):
    register(ModelSpec(_name, _tv(_name), _split_resnet, torchvision_name=_name, trainable_blocks=_blocks))
register(ModelSpec("densenet121", _tv("densenet121"), _split_densenet, torchvision_name="densenet121"))
register(
    ModelSpec(
        "mobilenet_v2",
        _tv("mobilenet_v2"),
        _split_features,
        torchvision_name="mobilenet_v2",
        trainable_blocks=5,
        notes="partial = blocks 14-18 + head",
    )
)
register(
    ModelSpec(
        "efficientnet_b0",
        _tv("efficientnet_b0"),
        _split_features,
        torchvision_name="efficientnet_b0",
        trainable_blocks=3,
    )
)
register(
    ModelSpec(
        "efficientnet_b3",
        _tv("efficientnet_b3"),
        _split_features,
        input_size=300,
        torchvision_name="efficientnet_b3",
        trainable_blocks=3,
    )
)
register(
    ModelSpec(
        "vgg16",
        _tv("vgg16"),
        _split_vgg,
        torchvision_name="vgg16",
        trainable_blocks=1,
        notes="conv stages + global pooling; the pretrained FC layers are not used",
    )
)
register(
    ModelSpec(
        "inception_v3",
        _tv("inception_v3", aux_logits=True, init_weights=False),
        _split_inception,
        input_size=299,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        torchvision_name="inception_v3",
        trainable_blocks=3,
        aux=_inception_aux,
        min_input_size=299,  # the auxiliary head pools a 17 px Mixed_6e map
        notes="auxiliary head trained with loss weight 0.4 when Mixed_6e is trained",
    )
)
# EfficientNet-Lite: no squeeze-excite, ReLU6, fixed stem and head (friendly to INT8); Lite1 and Lite2 run at
# their native 240 and 260 px (the same weights at 224 px lose accuracy).
for _n, _size in ((0, 224), (1, 240), (2, 260)):
    register(
        ModelSpec(
            f"efficientnet_lite{_n}",
            _timm_lite(_n),
            _split_timm_efficientnet,
            input_size=_size,
            mean=(0.5, 0.5, 0.5),
            std=(0.5, 0.5, 0.5),
            trainable_blocks=2,
            notes=f"timm tf_efficientnet_lite{_n} at {_size} px; partial = the last stage and the head convolution",
        )
    )
register(
    ModelSpec(
        "squeezenet1_1",
        _tv("squeezenet1_1"),
        _split_squeezenet,
        torchvision_name="squeezenet1_1",
        trainable_blocks=2,
    )
)
register(
    ModelSpec(
        "simple_cnn",
        SimpleCNN,
        lambda m: (list(m.features.children()), m.width),
        input_size=64,
        pretrained=False,
        default_strategy="scratch",
        trainable_blocks=4,
        notes="trained from scratch at 64 px",
    )
)

DEFAULT_MODELS = ("resnet50", "densenet121", "mobilenet_v2", "efficientnet_lite0", "simple_cnn")
QUICK_MODELS = ("mobilenet_v2", "simple_cnn")
# The strongest offline backbones (EfficientNet-Lite2 at 260 px was the best on UC Merced's validation split)
# beside the two fast ones, for a user who asks how accurate their data can get; about twice the default's
# training time on a CPU.
ACCURATE_MODELS = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
MODEL_PRESETS = {"auto": DEFAULT_MODELS, "accurate": ACCURATE_MODELS}


def build_classifier(name: str, n_classes: int, head: HeadConfig | None = None) -> SceneClassifier:
    """The architecture with a new head and random weights (what a checkpoint is loaded into)."""
    spec = check_model_name(name)
    return to_scene_classifier(spec, spec.build(), n_classes, head or HeadConfig())


def save_checkpoint(
    path, model: SceneClassifier, name: str, classes: list[str], head: HeadConfig, input_size: int, mean, std
) -> None:
    """Weights plus what is needed to rebuild the model (plain types only, so it loads with weights_only);
    written to a temp file renamed over ``path``, so a full disk or a kill never leaves half a checkpoint."""
    from dataclasses import asdict
    from pathlib import Path

    from .atomic import torch_save

    torch_save(
        {
            "model": name,
            "classes": list(classes),
            "head": asdict(head),
            "input_size": int(input_size),
            "mean": list(mean),
            "std": list(std),
            "state_dict": model.state_dict(),
        },
        Path(path),
    )


def load_checkpoint(path) -> tuple[SceneClassifier, dict]:
    """Rebuild a trained model from ``checkpoint.pt`` (``weights_only=True``: no code runs on load)."""
    meta = torch.load(path, map_location="cpu", weights_only=True)
    model = build_classifier(meta["model"], len(meta["classes"]), HeadConfig(**meta["head"]))
    model.load_state_dict(meta.pop("state_dict"))
    return model.eval(), meta
