"""Model lab: train expression classifiers and export them to the registry (extra ``[train]``).

CNN recipe: a VGG-style network on 48x48 gray crops, batch augmentation on the fly
(random affine, flip, brightness/contrast, erasing), class-weighted cross-entropy
against FER2013's imbalance, SGD with a one-cycle LR schedule, bf16 autocast on CPU,
a checkpoint every epoch (resumable), and early stopping on the selection split.
Optionally it starts from given weights and averages them over epochs (SWA), which
fine-tunes a trained network for the cost of one at inference.
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
    init: str | None = None
    swa_start: int = 0
    swa_lr: float = 0.01

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"unknown arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        for name in ("width", "epochs", "batch_size", "patience"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")
        if not 0 <= self.class_weight_power <= 1:
            raise ValueError(f"class_weight_power must be in [0, 1], got {self.class_weight_power}")
        if not 0 <= self.swa_start <= self.epochs:
            raise ValueError(f"swa_start must be in [0, epochs={self.epochs}], got {self.swa_start}")
        if self.swa_lr <= 0:
            raise ValueError(f"swa_lr must be > 0, got {self.swa_lr}")
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"init checkpoint {self.init!r} is not a file")


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
    xtr, ytr = _to_tensor(xtr_np), torch.from_numpy(ytr_np)
    xva = (_to_tensor(xva_np) - 0.5) / 0.5  # normalised once; evaluated every epoch
    # channels_last lets oneDNN pick its fast convolution kernels on CPU (1.3x measured here)
    net = (load_cnn(config.init, config.width) if config.init else build_cnn(config.width)).to(
        memory_format=torch.channels_last
    )
    steps_per_epoch = math.ceil(len(xtr) / config.batch_size)
    opt = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=0.9, nesterov=True, weight_decay=config.weight_decay)
    # one cycle over the epochs before SWA (all of them without SWA); SWA then holds swa_lr and averages the weights
    # at the end of each epoch (Izmailov et al. 2018), which is one network's cost at inference.
    cycle_epochs = config.swa_start - 1 if config.swa_start else config.epochs
    if cycle_epochs:
        # + 1: the scheduler counts its starting point, so the last step lands on the end of the cycle, not past it
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=cycle_epochs * steps_per_epoch + 1, pct_start=0.15
        )
    else:  # SWA from the first epoch: fine-tuning --init weights at swa_lr throughout
        sched = None
        for group in opt.param_groups:
            group["lr"] = config.swa_lr
    swa, swa_sched, bn_batches = None, None, []
    if config.swa_start:
        swa = torch.optim.swa_utils.AveragedModel(net)
        swa_sched = torch.optim.swa_utils.SWALR(opt, swa_lr=config.swa_lr, anneal_epochs=1, anneal_strategy="cos")
        # BN statistics of the averaged weights: a fixed random subset (the data may be sorted by class)
        bn_idx = torch.from_numpy(np.random.default_rng(config.seed).permutation(len(xtr))[:4096])
        bn_batches = list(torch.split(((xtr[bn_idx] - 0.5) / 0.5).contiguous(memory_format=torch.channels_last), 256))
    weights = torch.tensor(class_weights(ytr_np, config.class_weight_power), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing)
    gen = torch.Generator().manual_seed(config.seed)
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": [], "stale": 0}
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        # options added since the checkpoint was written count as their defaults
        saved_config = {**asdict(TrainConfig()), **saved["config"]}
        same = {k: v for k, v in saved_config.items() if k != "threads"} == {
            k: v for k, v in asdict(config).items() if k != "threads"
        }
        if not same:
            raise ValueError(f"{ckpt} was made with another config; use a new --out folder")
        net.load_state_dict(saved["net"])
        opt.load_state_dict(saved["opt"])
        if sched is not None:
            sched.load_state_dict(saved["sched"])
        if swa is not None:  # swa_start > 0: written by this version, so the SWA state is there
            swa.load_state_dict(saved["swa"])
            swa_sched.load_state_dict(saved["swa_sched"])
        gen.set_state(saved["gen"])
        state = saved["state"]
        log.info("resuming from epoch %d", state["epoch"])
    while state["epoch"] < config.epochs and state["stale"] < config.patience:
        epoch = state["epoch"] + 1
        in_swa = bool(config.swa_start) and epoch >= config.swa_start
        net.train()
        perm = torch.randperm(len(xtr), generator=gen)
        t0, total = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            xb = ((augment(xtr[idx], gen) - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                loss = loss_fn(net(xb).float(), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not in_swa:
                sched.step()
            total += float(loss.detach())
            if on_step:
                on_step(step + 1, steps_per_epoch)
        lr = opt.param_groups[0]["lr"]
        net.eval()
        model = net
        if in_swa:
            swa.update_parameters(net)
            swa_sched.step()
            torch.optim.swa_utils.update_bn(bn_batches, swa)  # averaged weights need their own BN statistics
            model = swa.module.eval()
        logits = _logits(model, xva, config.bf16, config.flip_tta)
        acc = float((logits.argmax(1) == yva_np).mean())
        metrics = {"epoch": epoch, "loss": total / steps_per_epoch, "select_acc": acc,
                   "seconds": time.perf_counter() - t0, "lr": lr, "swa": in_swa}  # fmt: skip
        state["history"].append(metrics)
        state["epoch"] = epoch
        if acc > state["best_acc"]:
            state.update(best_acc=acc, best_epoch=epoch, stale=0)
            torch.save(model.state_dict(), out / "best.pt")
        else:
            state["stale"] += 1
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict() if sched is not None else None,
                    "swa": swa.state_dict() if swa is not None else None,
                    "swa_sched": swa_sched.state_dict() if swa_sched is not None else None,
                    "gen": gen.get_state(), "state": state, "config": asdict(config)}, ckpt)  # fmt: skip
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
        if on_epoch:
            on_epoch(epoch, config.epochs, metrics)
    net.load_state_dict(torch.load(out / "best.pt"))
    net.eval()
    logits = _logits(net, xva, config.bf16, config.flip_tta)
    return {"net": net, "select_logits": logits, "select_labels": yva_np, "state": state}


def load_cnn(checkpoint: str | os.PathLike, width: int):  # noqa: ANN201
    """A trained CNN from its best.pt (a state dict), in eval mode."""
    torch = _torch()
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    net = build_cnn(width)
    try:
        net.load_state_dict(torch.load(path, weights_only=True))
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit a width-{width} CNN: {str(exc).splitlines()[0]}") from None
    return net.eval()


def _averaged(nets: list, flips: list[bool]):  # noqa: ANN001, ANN202
    """One module whose output is log of the mean softmax over members (and, where flips[i], member i's
    mirrored input too; every pass weighs the same).

    Log-probabilities are valid logits for the registry ("output": "logits") and for temperature
    scaling; averaging probabilities rather than logits keeps members with different scales fair.
    """
    torch = _torch()

    class Averaged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(nets)

        def forward(self, x):  # noqa: ANN001
            mirrored = torch.flip(x, dims=[3])
            views = [[x, mirrored] if f else [x] for f in flips]
            probs = [torch.softmax(m(v), dim=1) for m, vs in zip(self.members, views) for v in vs]
            return torch.log(torch.stack(probs).mean(0).clamp_min(1e-7))

    return Averaged()


def _flip_flags(flip_tta: bool | list[bool], members: int) -> list[bool]:
    """One flip-TTA flag per member, from a flag for all or a list."""
    flips = list(flip_tta) if isinstance(flip_tta, (list, tuple)) else [bool(flip_tta)] * members
    if len(flips) != members:
        raise ValueError(f"flip_tta has {len(flips)} flags for {members} members")
    return flips


def export_onnx(nets, path: str | os.PathLike, size: int = 48, flip_tta: bool | list[bool] = True) -> Path:  # noqa: ANN001
    """ONNX (NCHW float input, logits output), dynamic batch, of one net or the average of several.

    flip_tta: for all members, or one flag per member.
    """
    torch = _torch()
    nets = list(nets) if isinstance(nets, (list, tuple)) else [nets]
    nets = [n.to(memory_format=torch.contiguous_format) for n in nets]
    flips = _flip_flags(flip_tta, len(nets))
    module = _averaged(nets, flips) if len(nets) > 1 or any(flips) else nets[0]
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


def _calibrated_spec(logits: np.ndarray, labels: np.ndarray, onnx_path: Path, name: str, description: str,
                     extra: dict, default: bool, card: str | None = None) -> dict:  # fmt: skip
    """Fit the temperature on selection-split logits, write the registry spec; returns the metrics."""
    temperature = fit_temperature(logits, labels)
    z = logits / temperature
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    report = summarise(probs, labels)
    metrics = {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "ece": report["ece"],
               "temperature": temperature, **extra}  # fmt: skip
    write_spec(name, onnx_path, temperature, metrics, description, default=default, card=card)
    return metrics


def finish_cnn(result: dict, out_dir: Path, name: str, config: TrainConfig, default: bool = False) -> dict:
    """Calibrate on the selection split, export ONNX and its spec; returns the metrics."""
    onnx_path = export_onnx(result["net"], out_dir / f"{name}.onnx", flip_tta=config.flip_tta)
    extra = {"select_split": config.select_split, "best_epoch": result["state"]["best_epoch"], "config": asdict(config)}
    return _calibrated_spec(result["select_logits"], result["select_labels"], onnx_path, name,
                            f"ferpipe VGG-style CNN (width {config.width}) trained on FER2013", extra, default)  # fmt: skip


def export_model(checkpoints: list[str | os.PathLike], data: str | os.PathLike, out_dir: str | os.PathLike,
                 name: str, width: int = 48, flip_tta: bool | list[bool] = False, int8: bool = False,
                 select_split: str = "public_test", calibration_images: int = 1024, default: bool = False,
                 seed: int = 0, limit: int | None = None, card: str | None = None) -> dict:  # fmt: skip
    """Trained CNNs -> one ONNX model (their averaged probabilities, optional flip TTA and int8) with a spec.

    The temperature and the reported metrics come from the exported file itself run by ONNX
    Runtime on the selection split, so they are what `ferpipe eval` will see.
    """
    if not checkpoints:
        raise ValueError("export needs at least one --checkpoint or --flip-checkpoint")
    if calibration_images < 1:
        raise ValueError(f"calibration_images must be >= 1, got {calibration_images}")
    from .convert import quantize_int8
    from .onnx import create_session

    nets = [load_cnn(c, width) for c in checkpoints]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(nets, out / f"{name}.onnx", flip_tta=flip_tta)
    norm = lambda g: ((_to_tensor(g) - 0.5) / 0.5).numpy()  # noqa: E731  as in training; spec: mean 0.5, std 0.5
    if int8:
        xtr, _ = load_dataset(data, "train", limit)
        pick = np.random.default_rng(seed).choice(len(xtr), min(calibration_images, len(xtr)), replace=False)
        quantize_int8(onnx_path, onnx_path, norm(xtr[np.sort(pick)]))
    xva, yva = load_dataset(data, select_split, limit)
    session = create_session(onnx_path)
    x = norm(xva)
    logits = np.concatenate([session.run(None, {"input": x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    members = ", ".join(Path(c).parent.name for c in checkpoints)
    flips = _flip_flags(flip_tta, len(nets))
    what = f"average of {len(nets)} CNNs" if len(nets) > 1 else "CNN"
    tta = "" if not any(flips) else ", flip TTA" if all(flips) else f", flip TTA on {sum(flips)} of {len(flips)}"
    description = f"ferpipe VGG-style {what} (width {width}) trained on FER2013{tta}{', int8' if int8 else ''}"
    extra = {"select_split": select_split, "members": members, "flip_tta": flips, "int8": int8,
             "passes_per_face": len(flips) + sum(flips)}  # fmt: skip
    return _calibrated_spec(logits, yva, onnx_path, name, description, extra, default, card)


def register(out_dir: Path, name: str, registry_dir: Path | None = None) -> Path:
    """Copy an exported model and its spec into the cache registry, so --model NAME finds it."""
    import shutil

    from .config import cache_dir

    dest = registry_dir or cache_dir() / "registry"
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copy2(out_dir / f"{name}{suffix}", dest / f"{name}{suffix}")
    return dest / f"{name}.json"
