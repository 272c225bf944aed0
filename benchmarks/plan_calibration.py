"""The plan's rates: seconds per MAC of each kind of work, relative to the reference's (eager MobileNetV2).

For each model, interleaved in one process with the reference model (randomly initialised weights: time
does not depend on their values): its frozen prefix in ONNX Runtime at 4 images a call (the feature cache),
a training step of its trainable suffix at batch 32 on cached-size features (forward, backward, AdamW) and
the whole model in eager PyTorch at batch 1. Writes ``results/plan_calibration-<cpu>.csv``; the ratios go
into ``scenelib/plan.py``'s ``CALIBRATION``.

    python benchmarks/plan_calibration.py --models resnet50,densenet121,mobilenet_v2 --rounds 5
"""

from __future__ import annotations

import argparse
import re
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from scenelib.features import BULK_BATCH, make_runner
from scenelib.hardware import cpu_features, cpu_name, int8_class, reference_latency_ms
from scenelib.models import MODELS, build_classifier
from scenelib.plan import block_macs, reference_gmacs
from scenelib.training import TrainConfig, cut_point, frozen_prefix, trainable_part

RESULTS = Path(__file__).resolve().parent / "results"


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def calls_for(name: str, size: int, threads: int) -> dict[str, tuple[object, float]]:
    """{work: (call, GMACs per image)} for one model at ``size`` px."""
    spec = MODELS[name]
    strategy = spec.default_strategy if spec.default_strategy != "scratch" else "full"
    model = build_classifier(name, 21).eval()
    cut = cut_point(model, spec, TrainConfig(strategy=strategy))
    macs, shapes, head, _ = block_macs(name, size, 21)
    calls = {}
    x1 = torch.randn(1, 3, size, size)
    whole = (sum(macs) + head) / 1e9
    calls["eager"] = (lambda: model(x1), whole)
    if cut:
        runner, _ = make_runner(frozen_prefix(model, cut), size, threads)
        xb = torch.randn(BULK_BATCH, 3, size, size).numpy()
        calls["prefix"] = (lambda: runner(xb), sum(macs[:cut]) / 1e9 * BULK_BATCH)
        feats = torch.randn(32, *shapes[cut - 1])
    else:
        feats = torch.randn(32, 3, size, size)
    net = trainable_part(model, cut) if cut else model
    optimiser = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-3)
    labels = torch.randint(0, 21, (32,))
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        net.train()
        out = net(feats)
        out = out[0] if isinstance(out, tuple) else out
        loss = loss_fn(out, labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        net.eval()

    calls["train"] = (step, (sum(macs[cut:]) + head) / 1e9 * 32)
    return calls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="resnet50,densenet121,mobilenet_v2,efficientnet_lite0,simple_cnn")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import torchvision

    reference = torchvision.models.mobilenet_v2().eval()
    xr = torch.randn(1, 3, 224, 224)
    ref_per_gmac = reference_gmacs()
    start_ref = reference_latency_ms(args.threads)
    work = {m: calls_for(m, MODELS[m].input_size, args.threads) for m in args.models.split(",")}
    times: dict[tuple[str, str], list[float]] = {}
    refs: list[float] = []
    with torch.inference_mode(False):
        for fn_dict in work.values():  # warm-up
            for fn, _ in fn_dict.values():
                fn()
        for _ in range(args.rounds):
            for name, fn_dict in work.items():
                with torch.inference_mode():
                    refs.append(_timed(lambda: reference(xr)))
                for kind, (fn, _) in fn_dict.items():
                    if kind == "train":
                        times.setdefault((name, kind), []).append(_timed(fn))
                    else:
                        with torch.inference_mode():
                            times.setdefault((name, kind), []).append(_timed(fn))
    ref_s = statistics.median(refs)
    features = cpu_features()
    rows = []
    for (name, kind), t in times.items():
        gmacs = work[name][kind][1]
        seconds = statistics.median(t)
        rows.append(
            {
                "model": name,
                "work": kind,
                "input_size": MODELS[name].input_size,
                "gmacs_per_call": round(gmacs, 4),
                "ms_per_call": round(seconds * 1e3, 2),
                "ratio": round((seconds / gmacs) / (ref_s / ref_per_gmac), 3),
                "reference_ms_interleaved": round(ref_s * 1e3, 2),
                "reference_ms_start": round(start_ref, 2),
                "cpu": cpu_name(),
                "int8_class": int8_class(features),
                **{f: features[f] for f in ("avx2", "avx512_vnni", "amx_int8")},
                "threads": args.threads,
                "rounds": args.rounds,
            }
        )
    df = pd.DataFrame(rows)
    slug = re.sub(r"[^a-z0-9]+", "-", cpu_name().lower()).strip("-")[:40]
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"plan_calibration-{slug}.csv"
    df.to_csv(out, index=False)
    print(df[["model", "work", "gmacs_per_call", "ms_per_call", "ratio"]].to_string(index=False))
    print(f"reference {ref_s * 1e3:.1f} ms interleaved; wrote {out}")


if __name__ == "__main__":
    main()
