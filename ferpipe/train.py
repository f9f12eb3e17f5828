"""Model lab: train expression classifiers and export them to the registry (extra ``[train]``).

CNN recipe: a VGG-style network on 48x48 gray crops, batch augmentation on the fly
(random affine, flip, brightness/contrast, erasing), class-weighted cross-entropy
against FER2013's imbalance, SGD with a one-cycle LR schedule, bf16 autocast on CPU,
a checkpoint every epoch (resumable), and early stopping on the selection split.
The best epoch is exported to ONNX with a temperature fitted on the selection split
and a registry spec, so ``--model NAME`` works in process and eval at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .calibrate import fit_temperature
from .evaluate import load_crops, summarise
from .registry import sha256_file
from .types import EXPRESSIONS

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict], None]  # (epoch, epochs, metrics)
StepCallback = Callable[[int, int], None]  # (step, steps of this epoch)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored with its checkpoints and model card."""

    arch: str = "vgg"
    width: int = 48
    epochs: int = 60
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    class_weight_power: float = 0.5
    patience: int = 12
    seed: int = 0
    bf16: bool = True
    threads: int = 0
    train_split: str = "train"
    select_split: str = "public_test"
    limit: int | None = None
    flip_tta: bool = True

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        for name in ("width", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


ARCHS = ("vgg", "svm-hog", "cnn-svm")


def load_dataset(path: str | os.PathLike, split: str | None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gray crops and labels from FER2013-layout Parquet, or an image folder with one subfolder per class."""
    p = Path(path)
    if p.is_dir():
        return load_image_folder(p / split if split and (p / split).is_dir() else p, limit)
    return load_crops(p, split, limit)


def load_image_folder(root: Path, limit: int | None = None, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """root/<expression>/*.png|jpg -> (N, size, size) gray, labels in EXPRESSIONS order."""
    images, labels = [], []
    classes = [d.name for d in sorted(root.iterdir()) if d.is_dir()]
    unknown = [c for c in classes if c not in EXPRESSIONS]
    if not classes or unknown:
        raise ValueError(f"{root}: subfolders must be expression names {EXPRESSIONS}, found {classes}")
    for cls in classes:
        for f in sorted((root / cls).iterdir()):
            img = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
            if img is None:
                continue
            images.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
            labels.append(EXPRESSIONS.index(cls))
    if limit:
        images, labels = images[:limit], labels[:limit]
    return np.stack(images), np.array(labels, dtype=np.int64)


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the extra
        raise ImportError("training needs the [train] extra: pip install 'ferpipe[train]' (torch==2.13.0)") from None
    return torch


def build_cnn(width: int = 48):
    """VGG-style: four double-conv blocks (w, 2w, 4w, 8w), global average pool, dropout, linear."""
    torch = _torch()
    nn = torch.nn

    def block(cin: int, cout: int) -> list:
        layers = []
        for k in range(2):
            layers += [nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        return layers + [nn.MaxPool2d(2)]

    w = width
    return nn.Sequential(
        *block(1, w), *block(w, 2 * w), *block(2 * w, 4 * w), *block(4 * w, 8 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(8 * w, len(EXPRESSIONS)),
    )  # fmt: skip


def augment(x, generator):  # noqa: ANN001
    """Random affine (rotate ±15°, scale 0.85-1.15, shift ±10%), flip, contrast/brightness, erasing.

    x: (N, 1, H, W) float in [0, 1]; returns the same shape.
    """
    torch = _torch()
    n = x.shape[0]
    rand = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    angle = (rand(n) - 0.5) * math.radians(30)
    scale = 0.85 + rand(n) * 0.3
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = (rand(n, 2) - 0.5) * 0.2
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = 0.7 + rand(n, 1, 1, 1) * 0.6
    bright = (rand(n, 1, 1, 1) - 0.5) * 0.3
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    # random erasing of a box in half the images
    h, w = x.shape[2:]
    eh = (rand(n) * 0.3 * h + 4).long()
    ew = (rand(n) * 0.3 * w + 4).long()
    ey = (rand(n) * (h - eh)).long()
    ex = (rand(n) * (w - ew)).long()
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    box = (ys >= ey.view(n, 1, 1)) & (ys < (ey + eh).view(n, 1, 1)) & (xs >= ex.view(n, 1, 1)) & (xs < (ex + ew).view(n, 1, 1))
    box &= (rand(n) < 0.5).view(n, 1, 1)
    return torch.where(box.unsqueeze(1), rand(n, 1, 1, 1), x)


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """(count / mean count) ** -power per class: 0 = unweighted, 1 = fully balanced."""
    counts = np.bincount(labels, minlength=len(EXPRESSIONS)).astype(np.float64)
    counts = np.maximum(counts, 1)
    w = (counts / counts.mean()) ** -power
    return w / (w * counts).sum() * counts.sum()


def _logits(net, x, bf16: bool, flip: bool, batch: int = 512):  # noqa: ANN001
    torch = _torch()
    outs = []
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for i in range(0, len(x), batch):
            xb = x[i : i + batch]
            z = net(xb).float()
            if flip:
                z = (z + net(torch.flip(xb, dims=[3])).float()) / 2
            outs.append(z)
    return torch.cat(outs).numpy()


def _to_tensor(gray: np.ndarray):
    torch = _torch()
    return torch.from_numpy(gray.astype(np.float32) / 255.0).unsqueeze(1).contiguous()


def train_cnn(data: str | os.PathLike, out_dir: str | os.PathLike, config: TrainConfig,
              on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None) -> dict:  # fmt: skip
    """Train (resuming from out_dir/checkpoint.pt if present); returns the best epoch's metrics."""
    torch = _torch()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    xtr_np, ytr_np = load_dataset(data, config.train_split, config.limit)
    xva_np, yva_np = load_dataset(data, config.select_split, config.limit)
    xtr, ytr, xva = _to_tensor(xtr_np), torch.from_numpy(ytr_np), _to_tensor(xva_np)
    net = build_cnn(config.width)
    steps_per_epoch = math.ceil(len(xtr) / config.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=config.lr, epochs=config.epochs, steps_per_epoch=steps_per_epoch, pct_start=0.15
    )
    weights = torch.tensor(class_weights(ytr_np, config.class_weight_power), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    gen = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": [], "stale": 0}
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        same = {k: v for k, v in saved["config"].items() if k != "threads"} == {
            k: v for k, v in asdict(config).items() if k != "threads"
        }
        if not same:
            raise ValueError(f"{ckpt} was made with another config; use a new --out folder")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        sched.load_state_dict(saved["sched"])
        gen.set_state(saved["gen"])
        state = saved["state"]
        log.info("resuming from epoch %d", state["epoch"])
    while state["epoch"] < config.epochs and state["stale"] < config.patience:
        epoch = state["epoch"] + 1
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        t0, total = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            xb = (augment(xtr[idx], gen) - 0.5) / 0.5
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss = loss_fn(net(xb).float(), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            if on_step:
                on_step(step + 1, steps_per_epoch)
        net.eval()
        logits = _logits(net, (xva - 0.5) / 0.5, config.bf16, config.flip_tta)
        acc = float((logits.argmax(1) == yva_np).mean())
        metrics = {"epoch": epoch, "loss": total / steps_per_epoch, "select_acc": acc,
                   "seconds": time.perf_counter() - t0, "lr": sched.get_last_lr()[0]}  # fmt: skip
        state["history"].append(metrics)
        state["epoch"] = epoch
        if acc > state["best_acc"]:
            state.update(best_acc=acc, best_epoch=epoch, stale=0)
            torch.save(net.state_dict(), out / "best.pt")
        else:
            state["stale"] += 1
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                    "gen": gen.get_state(), "state": state, "config": asdict(config)}, ckpt)  # fmt: skip
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
        if on_epoch:
            on_epoch(epoch, config.epochs, metrics)
    net.load_state_dict(torch.load(out / "best.pt"))
    net.eval()
    logits = _logits(net, (xva - 0.5) / 0.5, config.bf16, config.flip_tta)
    return {"net": net, "select_logits": logits, "select_labels": yva_np, "state": state}


class _FlipTTA:
    """Wraps a network so its ONNX graph averages the logits of the crop and its mirror."""

    def __new__(cls, net):  # noqa: ANN001
        torch = _torch()

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = net

            def forward(self, x):  # noqa: ANN001
                return (self.net(x) + self.net(torch.flip(x, dims=[3]))) / 2

        return Wrapped()


def export_onnx(net, path: str | os.PathLike, size: int = 48, flip_tta: bool = True) -> Path:  # noqa: ANN001
    """ONNX (NCHW float input, logits output), dynamic batch."""
    torch = _torch()
    module = _FlipTTA(net) if flip_tta else net
    module.eval()
    dummy = torch.zeros(1, 1, size, size)
    path = Path(path)
    torch.onnx.export(
        module, dummy, str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


def write_spec(name: str, onnx_path: Path, temperature: float, metrics: dict, description: str,
               default: bool = False, card: str | None = None) -> Path:  # fmt: skip
    """A registry JSON beside the ONNX file; the registry picks it up from models/ or the cache."""
    spec = {
        "name": name,
        "task": "expression",
        "files": {"model": {"kind": "file", "location": onnx_path.name, "sha256": sha256_file(onnx_path)}},
        "preprocess": {
            "size": 48, "channels": 1, "mean": 0.5, "std": 0.5, "layout": "NCHW",
            "labels": list(EXPRESSIONS), "output": "logits", "temperature": round(float(temperature), 4),
        },  # fmt: skip
        "description": description,
        "license": "MIT (weights trained by ferpipe on FER2013, research use)",
        "card": card,
        "extra": {"default": default, "metrics": metrics},
    }
    out = onnx_path.with_suffix(".json")
    out.write_text(json.dumps(spec, indent=2))
    return out


def finish_cnn(result: dict, out_dir: Path, name: str, config: TrainConfig, default: bool = False) -> dict:
    """Calibrate on the selection split, export ONNX and its spec; returns the metrics."""
    logits, labels = result["select_logits"], result["select_labels"]
    temperature = fit_temperature(logits, labels)
    z = logits / temperature
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    report = summarise(probs, labels)
    metrics = {"select_split": config.select_split, "accuracy": report["accuracy"], "macro_f1": report["macro_f1"],
               "ece": report["ece"], "temperature": temperature, "best_epoch": result["state"]["best_epoch"],
               "config": asdict(config)}  # fmt: skip
    onnx_path = export_onnx(result["net"], out_dir / f"{name}.onnx", flip_tta=config.flip_tta)
    write_spec(name, onnx_path, temperature, metrics, f"ferpipe VGG-style CNN (width {config.width}) trained on FER2013",
               default=default)  # fmt: skip
    return metrics


def register(out_dir: Path, name: str, registry_dir: Path | None = None) -> Path:
    """Copy an exported model and its spec into the cache registry, so --model NAME finds it."""
    import shutil

    from .config import cache_dir

    dest = registry_dir or cache_dir() / "registry"
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copy2(out_dir / f"{name}{suffix}", dest / f"{name}{suffix}")
    return dest / f"{name}.json"
