"""Model lab: train expression classifiers and export them to the registry (extra ``[train]``).

CNN recipe: a VGG-style network on 48x48 gray crops, batch augmentation on the fly, class-weighted
cross-entropy, SGD with a one-cycle LR schedule, bf16 autocast on CPU, a checkpoint every epoch
(resumable), and early stopping on the selection split. Optionally it starts from given weights
and averages them over epochs (SWA), which fine-tunes a trained network for the cost of one at
inference.

Several datasets train one network: each labelling protocol (FER2013's single labels, FER+'s ten
annotators' votes) gets its own output head of seven logits on a shared backbone, because the
two protocols disagree on about a third of the same faces (FER2013's "sad" is FER+'s "neutral"
for half of them). FER+ heads learn the vote distribution (cross-entropy against it, the FER+
paper's best scheme) or the majority label. The first head is the one the pipeline uses.

The best epoch is exported to ONNX with a temperature per head fitted on the selection split and
a registry spec, so ``--model NAME`` works in process and eval at once.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from ..registry import get_spec, sha256_file
from ..types import EXPRESSIONS
from .calibrate import domain_weights, fit_temperature
from .data import LabelledFaces, is_domain_file, load_faces
from .evaluate import summarise

log = logging.getLogger(__name__)

EpochCallback = Callable[[int, int, dict], None]  # (epoch, epochs, metrics)
StepCallback = Callable[[int, int], None]  # (step, steps of this epoch)
K = len(EXPRESSIONS)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; stored with its checkpoints and model card.

    augment: "fer" (affine, flip, contrast, erasing: FER2013-like crops) or "domain" (also crop
    jitter, perspective, down/up-scaling, blur, JPEG, gamma, noise, occluding bands: the crops
    real videos give). ferplus_target: "votes" (distribution) or "majority" (hard label).
    """

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
    augment: str = "fer"
    ferplus_target: str = "votes"
    epoch_size: int | None = None  # draws per epoch (with replacement, by sampling_weights); None: one pass over all
    domain_share: float = 0.5  # share of an epoch's draws from multi-domain data, where there is some
    hold_out: str | None = None  # leave this domain (file stem) out of training and selection: LODO runs
    class_balance: float = 0.0  # with epoch_size: draw each class of a dataset in proportion to count^(1-b); 1: even

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
        if self.epoch_size is not None and self.epoch_size < self.batch_size:
            raise ValueError(f"epoch_size must be >= batch_size ({self.batch_size}), got {self.epoch_size}")
        if not 0 < self.domain_share < 1:
            raise ValueError(f"domain_share must be in (0, 1), got {self.domain_share}")
        if not 0 <= self.class_balance <= 1:
            raise ValueError(f"class_balance must be in [0, 1], got {self.class_balance}")
        if self.class_balance and self.epoch_size is None:
            raise ValueError("class_balance needs epoch_size (balanced draws replace the one pass over all images)")
        if self.init is not None and not Path(self.init).is_file():
            raise ValueError(f"init checkpoint {self.init!r} is not a file")
        if self.augment not in AUGMENTS:
            raise ValueError(f"augment must be one of {AUGMENTS}, got {self.augment!r}")
        if self.ferplus_target not in ("votes", "majority"):
            raise ValueError(f"ferplus_target must be votes or majority, got {self.ferplus_target!r}")


ARCHS = ("vgg", "svm-hog", "cnn-svm")
AUGMENTS = ("fer", "domain")


def load_dataset(path: str | os.PathLike, split: str | None, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Gray crops and hard labels (labelled images only) of any layout ``load_faces`` reads."""
    faces = load_faces(path, split, limit)
    faces = faces.subset(faces.labelled)
    return faces.images, faces.labels


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - depends on the extra
        raise ImportError("training needs the [train] extra: pip install 'ferpipe[train]' (torch==2.13.0)") from None
    return torch


def build_cnn(width: int = 48, heads: int = 1):
    """VGG-style: four double-conv blocks (w, 2w, 4w, 8w), global average pool, dropout, and one linear
    layer with 7 logits per head (one head: the layout of every earlier checkpoint)."""
    torch = _torch()
    nn = torch.nn

    def block(cin: int, cout: int) -> list:
        layers = []
        for k in range(2):
            layers += [
                nn.Conv2d(cin if k == 0 else cout, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
        return [*layers, nn.MaxPool2d(2)]

    w = width
    return nn.Sequential(
        *block(1, w), *block(w, 2 * w), *block(2 * w, 4 * w), *block(4 * w, 8 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4), nn.Linear(8 * w, K * heads),
    )  # fmt: skip


def _affine_grid(n: int, shape: list, rand, domain: bool):
    """Sampling grids: rotation, scale, shift and flip; with ``domain`` also a small perspective
    (head turn) and a wider crop jitter around the alignment template."""
    torch = _torch()
    rot, (s0, s1), shift = (20, (0.8, 1.25), 0.24) if domain else (15, (0.85, 1.15), 0.2)
    angle = (rand(n) - 0.5) * math.radians(2 * rot)
    scale = s0 + rand(n) * (s1 - s0)
    flip = torch.where(rand(n) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip
    theta[:, 0, 1] = -sin
    theta[:, 1, 0] = sin * flip
    theta[:, 1, 1] = cos
    theta[:, :, 2] = (rand(n, 2) - 0.5) * shift
    grid = torch.nn.functional.affine_grid(theta, shape, align_corners=False)
    if domain:  # projective terms: x' = x / (1 + px x + py y), as a face turning a little left/right/up/down
        p = (rand(n, 1, 1, 2) - 0.5) * 0.3
        base = torch.nn.functional.affine_grid(torch.eye(2, 3).expand(n, 2, 3), shape, align_corners=False)
        grid = grid / (1 + (base * p).sum(-1, keepdim=True))
    return grid


def _blur(x, sigma):
    """Per-image Gaussian blur (sigma: (N,)), separable, as one grouped convolution."""
    torch = _torch()
    n, _, h, w = x.shape
    r = torch.arange(-3, 4, dtype=x.dtype)
    k = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].clamp_min(1e-3) ** 2))
    k = k / k.sum(1, keepdim=True)
    y = torch.nn.functional.pad(x.view(1, n, h, w), (3, 3, 3, 3), mode="replicate")
    y = torch.nn.functional.conv2d(y, k.view(n, 1, 1, 7), groups=n)
    y = torch.nn.functional.conv2d(y, k.view(n, 1, 7, 1), groups=n)
    return y.view(n, 1, h, w)


def _jpeg(x, quality: np.ndarray):
    """JPEG round trip at the given qualities (N,) (OpenCV, on uint8 copies)."""
    torch = _torch()
    imgs = (x[:, 0].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    out = np.stack([
        cv2.imdecode(cv2.imencode(".jpg", im, [cv2.IMWRITE_JPEG_QUALITY, int(q)])[1], cv2.IMREAD_GRAYSCALE)
        for im, q in zip(imgs, quality, strict=False)
    ])  # fmt: skip
    return torch.from_numpy(out.astype(np.float32) / 255.0).unsqueeze(1)


def augment(x, generator, domain: bool = False):
    """Random affine (rotate, scale, shift), flip, contrast/brightness and erasing; with ``domain`` also
    perspective, down- then up-scaling, blur, JPEG artefacts, gamma, noise and occluding bands.

    x: (N, 1, H, W) float in [0, 1]; returns the same shape, still in [0, 1].
    """
    torch = _torch()
    F = torch.nn.functional
    n, _, h, w = x.shape
    rand = lambda *s: torch.rand(*s, generator=generator)  # noqa: E731
    x = F.grid_sample(x, _affine_grid(n, list(x.shape), rand, domain), padding_mode="border", align_corners=False)
    if domain:
        # a small face in the video (down to 20-36 px, back up to the crop size), or a soft focus: one or neither
        kind = rand(n)
        small, soft = kind < 0.2, (kind >= 0.2) & (kind < 0.4)
        if small.any():
            side = int(20 + rand(1).item() * 16)
            x[small] = F.interpolate(F.interpolate(x[small], size=(side, side), mode="area"), size=(h, w),
                                     mode="bilinear", align_corners=False)  # fmt: skip
        if soft.any():
            x[soft] = _blur(x[soft], 0.3 + rand(int(soft.sum())) * 0.7)
        gamma = torch.exp((rand(n, 1, 1, 1) - 0.5) * 0.8)
        x = x.clamp(1e-4, 1) ** gamma
    contrast = 0.7 + rand(n, 1, 1, 1) * 0.6
    bright = (rand(n, 1, 1, 1) - 0.5) * 0.3
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = ((x - mean) * contrast + mean + bright).clamp(0, 1)
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    if domain:
        # a band across the face (glasses, a hand, a hair strand): dark or light, 10-25% of the height
        band = rand(n) < 0.1
        top = (rand(n) * 0.7 * h).long().view(n, 1, 1)
        thick = (rand(n) * 0.15 * h + 0.1 * h).long().view(n, 1, 1)
        mask = (ys >= top) & (ys < top + thick) & band.view(n, 1, 1)
        x = torch.where(mask.unsqueeze(1), (rand(n, 1, 1, 1) < 0.5).float() * 0.9 + 0.05, x)
        noisy = (rand(n, 1, 1, 1) < 0.15).float()
        x = (x + noisy * torch.randn(x.shape, generator=generator) * (0.01 + rand(n, 1, 1, 1) * 0.03)).clamp(0, 1)
        jpeg = (rand(n) < 0.2).numpy()
        if jpeg.any():
            x[torch.from_numpy(jpeg)] = _jpeg(x[torch.from_numpy(jpeg)], 25 + rand(int(jpeg.sum())).numpy() * 60)
    # random erasing of a box in half the images
    eh = (rand(n) * 0.3 * h + 4).long()
    ew = (rand(n) * 0.3 * w + 4).long()
    ey = (rand(n) * (h - eh)).long()
    ex = (rand(n) * (w - ew)).long()
    box = (
        (ys >= ey.view(n, 1, 1))
        & (ys < (ey + eh).view(n, 1, 1))
        & (xs >= ex.view(n, 1, 1))
        & (xs < (ex + ew).view(n, 1, 1))
    )
    box &= (rand(n) < 0.5).view(n, 1, 1)
    return torch.where(box.unsqueeze(1), rand(n, 1, 1, 1), x)


def class_weights(labels: np.ndarray, power: float) -> np.ndarray:
    """(count / mean count) ** -power per class: 0 = unweighted, 1 = fully balanced."""
    counts = np.bincount(labels, minlength=K).astype(np.float64)
    counts = np.maximum(counts, 1)
    w = (counts / counts.mean()) ** -power
    return w / (w * counts).sum() * counts.sum()


def _logits(net, x, bf16: bool, flip: bool, batch: int = 512):
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


@dataclass(frozen=True)
class TrainingSet:
    """The training images of every dataset, with one target distribution, head index and source index per
    image, and every dataset's selection images (ordered by head, so each head's rows are contiguous).

    Multi-domain data (protocol "wild": web photos, posed, movie and news faces) trains the first head, the one
    the pipeline reads, so its readings learn other faces; its selection rows are each domain's dev split.
    """

    heads: tuple[str, ...]
    images: np.ndarray  # (N, 48, 48) uint8
    targets: np.ndarray  # (N, 7) float32, rows sum to 1
    head: np.ndarray  # (N,) int64
    select: tuple[LabelledFaces, ...]  # one per dataset, labelled images only, ordered by head
    select_head: tuple[int, ...] = ()  # the head each selection set is scored with
    source: np.ndarray | None = None  # (N,) int64: the dataset (index into names) each training image came from
    names: tuple[str, ...] = ()  # each dataset's name (file stem), in the order given
    wild: tuple[bool, ...] = ()  # whether each dataset is multi-domain data

    def head_select(self, i: int) -> LabelledFaces:
        """Head i's selection images: its datasets' sets, concatenated."""
        sets = [s for s, h in zip(self.select, self.select_head, strict=True) if h == i]
        return concat_faces(sets)


def concat_faces(sets: Sequence[LabelledFaces]) -> LabelledFaces:
    """One LabelledFaces of several (hard labels only; the first set's protocol)."""
    return LabelledFaces(np.concatenate([s.images for s in sets]), np.concatenate([s.labels for s in sets]),
                         sets[0].protocol, domain="+".join(s.domain for s in sets))  # fmt: skip


def selection_split(faces: LabelledFaces, config_split: str) -> str:
    """The selection split of a dataset: its dev split for multi-domain data, else the configured one."""
    return "dev" if faces.protocol == "wild" else config_split


def head_of(protocol: str, heads: list[str]) -> int:
    """The head a dataset trains (adding its protocol's head if new); multi-domain data trains the first."""
    if protocol == "wild" and heads:
        return 0
    if protocol not in heads:
        heads.append(protocol)
    return heads.index(protocol)


def training_targets(faces: LabelledFaces, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """(targets, keep mask): FER+ vote distributions or smoothed one-hot labels."""
    if faces.votes is not None and config.ferplus_target == "votes":
        keep = faces.votes.sum(axis=1) > 0
        return faces.votes[keep], keep
    keep = faces.labelled
    onehot = np.eye(K, dtype=np.float32)[faces.labels[keep]]
    return onehot * (1 - config.label_smoothing) + config.label_smoothing / K, keep


def load_training_set(data: Sequence[str | os.PathLike], config: TrainConfig) -> TrainingSet:
    """Read every dataset; one head per labelling protocol, in the order first given (multi-domain data
    joins the first head). With ``config.hold_out``, that domain is left out of training and selection."""
    heads: list[str] = []
    images, targets, head_idx, source, sets, names, wild = [], [], [], [], [], [], []
    for path in data:
        if config.hold_out and Path(path).stem == config.hold_out:
            continue
        tr = load_faces(path, config.train_split, config.limit)
        va = load_faces(path, selection_split(tr, config.select_split), config.limit)
        h = head_of(tr.protocol, heads)
        sets.append((va.subset(va.labelled), h))
        t, keep = training_targets(tr, config)
        images.append(tr.images[keep])
        targets.append(t)
        head_idx.append(np.full(int(keep.sum()), h, np.int64))
        source.append(np.full(int(keep.sum()), len(names), np.int64))
        names.append(Path(path).stem)
        wild.append(tr.protocol == "wild")
    if not images:
        raise ValueError(f"no training data left after holding out {config.hold_out!r}")
    order = sorted(range(len(sets)), key=lambda i: sets[i][1])  # stable: each head's sets stay in the given order
    return TrainingSet(tuple(heads), np.concatenate(images), np.concatenate(targets).astype(np.float32),
                       np.concatenate(head_idx), tuple(sets[i][0] for i in order), tuple(sets[i][1] for i in order),
                       np.concatenate(source), tuple(names), tuple(wild))  # fmt: skip


def sampling_weights(ts: TrainingSet, domain_share: float, class_balance: float = 0.0) -> np.ndarray:
    """Per-image draw probabilities for an epoch: each dataset's share grows with the square root of its size,
    and the multi-domain datasets together get ``domain_share`` of the draws (where there are any).

    ``class_balance`` b re-weights the classes inside each dataset: a class of c images gets a share in proportion
    to c^(1-b), so b = 1 draws every class of a dataset equally often (balanced sampling, the alternative to loss
    weighting for rare classes such as disgust and fear)."""
    n = np.bincount(ts.source, minlength=len(ts.names)).astype(np.float64)
    share = np.sqrt(n)
    wild = np.array(ts.wild, bool)
    if wild.any() and (~wild).any():
        share[wild] *= domain_share / share[wild].sum()
        share[~wild] *= (1 - domain_share) / share[~wild].sum()
    share /= share.sum()
    p = (share / np.maximum(n, 1))[ts.source]
    if class_balance:
        label = ts.targets.argmax(1)
        k = ts.targets.shape[1]
        for s in range(len(ts.names)):
            mine = ts.source == s
            counts = np.bincount(label[mine], minlength=k).astype(np.float64)
            present = counts > 0
            want = np.zeros(k)
            want[present] = counts[present] ** (1 - class_balance)
            want /= want.sum()
            per_image = np.divide(want, counts, out=np.zeros(k), where=present)  # share of one image of each class
            p[mine] = share[s] * per_image[label[mine]]
    return p / p.sum()


def head_accuracies(logits: np.ndarray, ts: TrainingSet, offsets: list[int]) -> list[float]:
    """Selection accuracy of each dataset's set, scored by its head."""
    accs = []
    for i, sel in enumerate(ts.select):
        h = ts.select_head[i] if ts.select_head else i
        z = logits[offsets[i] : offsets[i + 1], h * K : (h + 1) * K]
        accs.append(float((z.argmax(1) == sel.labels).mean()) if len(sel) else 0.0)
    return accs


def train_cnn(data: str | os.PathLike | Sequence[str | os.PathLike], out_dir: str | os.PathLike, config: TrainConfig,
              on_step: StepCallback | None = None, on_epoch: EpochCallback | None = None) -> dict:  # fmt: skip
    """Train (resuming from out_dir/checkpoint.pt if present); returns the best epoch's metrics.

    data: one dataset or several (FER2013 and FER+ Parquet, image folders); one head per protocol.
    """
    torch = _torch()
    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    if not paths:
        raise ValueError("train needs at least one --data")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    ts = load_training_set(paths, config)
    nh = len(ts.heads)
    xtr = _to_tensor(ts.images)
    ttr = torch.from_numpy(ts.targets)
    htr = torch.from_numpy(ts.head)
    offsets = list(np.cumsum([0] + [len(s) for s in ts.select]))
    xva = (_to_tensor(np.concatenate([s.images for s in ts.select])) - 0.5) / 0.5  # normalised once
    # channels_last lets oneDNN pick its fast convolution kernels on CPU (1.3x measured here)
    if config.init and config.init.endswith(".onnx"):  # a shipped model whose checkpoint is gone
        net = cnn_from_onnx(config.init, config.width, ts.images, nh)
    else:
        net = load_cnn(config.init, config.width, nh) if config.init else build_cnn(config.width, nh)
    net = net.to(memory_format=torch.channels_last)
    draw_p = (
        torch.from_numpy(sampling_weights(ts, config.domain_share, config.class_balance)) if config.epoch_size else None
    )
    steps_per_epoch = math.ceil((config.epoch_size or len(xtr)) / config.batch_size)
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
    # class weights per head, from the head's (majority) training labels
    cw = np.stack([class_weights(ts.targets[ts.head == i].argmax(1), config.class_weight_power) for i in range(nh)])
    sample_w = torch.from_numpy((ts.targets * cw[ts.head]).sum(1).astype(np.float32))
    gen = torch.Generator().manual_seed(config.seed)
    domain = config.augment == "domain"
    state = {"epoch": 0, "best_acc": -1.0, "best_epoch": 0, "history": [], "stale": 0}
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        saved = torch.load(ckpt, weights_only=False)
        # options added since the checkpoint was written count as their defaults
        saved_config = {**asdict(TrainConfig()), **saved["config"]}
        same = {k: v for k, v in saved_config.items() if k != "threads"} == {
            k: v for k, v in asdict(config).items() if k != "threads"
        }
        if not same or tuple(saved.get("heads", ts.heads)) != ts.heads:
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
    rows = torch.arange(config.batch_size)
    while state["epoch"] < config.epochs and state["stale"] < config.patience:
        epoch = state["epoch"] + 1
        in_swa = bool(config.swa_start) and epoch >= config.swa_start
        net.train()
        if draw_p is not None:
            perm = torch.multinomial(draw_p, steps_per_epoch * config.batch_size, replacement=True, generator=gen)
        else:
            perm = torch.randperm(len(xtr), generator=gen)
        t0, total = time.perf_counter(), 0.0
        for step in range(steps_per_epoch):
            idx = perm[step * config.batch_size : (step + 1) * config.batch_size]
            xb = ((augment(xtr[idx], gen, domain) - 0.5) / 0.5).contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
                z = net(xb).float()
            # each image's loss on its own protocol's head: soft cross-entropy, class-weighted
            z = z.view(len(idx), nh, K)[rows[: len(idx)], htr[idx]]
            w = sample_w[idx]
            loss = (-(ttr[idx] * torch.log_softmax(z, 1)).sum(1) * w).sum() / w.sum()
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
        accs = head_accuracies(_logits(model, xva, config.bf16, config.flip_tta), ts, offsets)
        acc = float(np.mean(accs))
        metrics = {"epoch": epoch, "loss": total / steps_per_epoch, "select_acc": acc,
                   "head_acc": dict(zip(select_names(ts), accs, strict=True)), "seconds": time.perf_counter() - t0, "lr": lr,
                   "swa": in_swa}  # fmt: skip
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
                    "gen": gen.get_state(), "state": state, "config": asdict(config), "heads": ts.heads}, ckpt)  # fmt: skip
        (out / "history.json").write_text(json.dumps(state["history"], indent=1))
        (out / "heads.json").write_text(json.dumps(list(ts.heads)))
        if on_epoch:
            on_epoch(epoch, config.epochs, metrics)
    net.load_state_dict(torch.load(out / "best.pt"))
    net.eval()
    logits = _logits(net, xva, config.bf16, config.flip_tta)
    per_head = [ts.head_select(i) for i in range(nh)] if ts.select_head else list(ts.select)
    domains = [np.concatenate([np.full(len(s), s.domain or ts.heads[h]) for s, h in zip(ts.select, ts.select_head,
               strict=True) if h == i]) for i in range(nh)] if ts.select_head else None  # fmt: skip
    return {"net": net, "select_logits": logits, "select": per_head, "heads": ts.heads, "domains": domains,
            "offsets": list(np.cumsum([0] + [len(s) for s in per_head])), "state": state}  # fmt: skip


def select_names(ts: TrainingSet) -> list[str]:
    """A name per selection set: its head where each head has one set (the earlier layout), else its domain."""
    if len(ts.select) == len(ts.heads):
        return list(ts.heads)
    return [s.domain or ts.heads[h] for s, h in zip(ts.select, ts.select_head, strict=True)]


def checkpoint_heads(checkpoint: str | os.PathLike) -> tuple[str, ...]:
    """The head names a training run wrote beside its checkpoints (heads.json); () for one unnamed head."""
    f = Path(checkpoint).parent / "heads.json"
    return tuple(json.loads(f.read_text())) if f.is_file() else ()


def load_cnn(checkpoint: str | os.PathLike, width: int, heads: int | None = None):
    """A trained CNN from its best.pt (a state dict), in eval mode; the number of heads is read from the
    weights unless given."""
    torch = _torch()
    path = Path(checkpoint)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    state = torch.load(path, weights_only=True)
    last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    found = max(1, last[-1].shape[0] // K) if last else 1
    net = build_cnn(width, found)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit a width-{width} CNN: {str(exc).splitlines()[0]}") from None
    if heads is not None and heads != found:
        if found != 1:
            raise ValueError(f"{path} has {found} heads; this training has {heads}")
        # a one-head network starts every head from its one head
        grown = build_cnn(width, heads)
        state = net.state_dict()
        lin = [k for k in state if k.endswith("weight") and state[k].dim() == 2][-1]
        bias = lin[: -len("weight")] + "bias"
        state[lin] = state[lin].repeat(heads, 1)
        state[bias] = state[bias].repeat(heads)
        grown.load_state_dict(state)
        net = grown
    return net.eval()


def _averaged(nets: list, flips: list[bool], heads: int = 1):
    """One module whose output is, per head, the log of the mean softmax over members (and, where flips[i],
    member i's mirrored input too; every pass weighs the same).

    Log-probabilities are valid logits for the registry ("output": "logits") and for temperature
    scaling; averaging probabilities rather than logits keeps members with different scales fair.
    """
    torch = _torch()

    class Averaged(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.members = torch.nn.ModuleList(nets)

        def forward(self, x):
            mirrored = torch.flip(x, dims=[3])
            views = [[x, mirrored] if f else [x] for f in flips]
            probs = [
                torch.softmax(m(v).reshape(-1, heads, K), dim=2)
                for m, vs in zip(self.members, views, strict=False)
                for v in vs
            ]
            return torch.log(torch.stack(probs).mean(0).clamp_min(1e-7)).reshape(-1, heads * K)

    return Averaged()


def _flip_flags(flip_tta: bool | list[bool], members: int) -> list[bool]:
    """One flip-TTA flag per member, from a flag for all or a list."""
    flips = list(flip_tta) if isinstance(flip_tta, (list, tuple)) else [bool(flip_tta)] * members
    if len(flips) != members:
        raise ValueError(f"flip_tta has {len(flips)} flags for {members} members")
    return flips


def _heads_of(net) -> int:
    return net[-1].out_features // K


def export_onnx(nets, path: str | os.PathLike, size: int = 48, flip_tta: bool | list[bool] = True) -> Path:
    """ONNX (NCHW float input, logits output: 7 per head), dynamic batch, of one net or the average of several.

    flip_tta: for all members, or one flag per member.
    """
    torch = _torch()
    nets = list(nets) if isinstance(nets, (list, tuple)) else [nets]
    nets = [n.to(memory_format=torch.contiguous_format) for n in nets]
    heads = {_heads_of(n) for n in nets}
    if len(heads) != 1:
        raise ValueError(f"members have different numbers of heads: {sorted(heads)}")
    flips = _flip_flags(flip_tta, len(nets))
    module = _averaged(nets, flips, heads.pop()) if len(nets) > 1 or any(flips) else nets[0]
    module.eval()
    dummy = torch.zeros(1, 1, size, size)
    path = Path(path)
    torch.onnx.export(
        module, dummy, str(path), input_names=["input"], output_names=["logits"],
        dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, opset_version=17, dynamo=False,
    )  # fmt: skip
    return path


def write_spec(name: str, onnx_path: Path, temperatures: dict[str, float], metrics: dict, description: str,
               default: bool = False, card: str | None = None, outputs: Sequence[str] | None = None) -> Path:  # fmt: skip
    """A registry JSON beside the ONNX file; the registry picks it up from models/ or the cache.

    temperatures: per head in output order; with more than one head the spec lists them, and the
    first is the pipeline's. outputs: the ONNX output of each head, when each head has its own.
    """
    temps = [round(float(t), 4) for t in temperatures.values()]
    pre = {
        "size": 48, "channels": 1, "mean": 0.5, "std": 0.5, "layout": "NCHW",
        "labels": list(EXPRESSIONS), "output": "logits", "temperature": temps[0],
    }  # fmt: skip
    if len(temps) > 1:
        pre["heads"] = [[h, t] for h, t in zip(temperatures, temps, strict=False)]
        if outputs:
            pre["heads"] = [[h, t, o] for (h, t), o in zip(pre["heads"], outputs, strict=True)]
    trained_on = " and ".join({"fer2013": "FER2013", "ferplus": "FER+"}.get(h, h) for h in temperatures) or "FER2013"
    spec = {
        "name": name,
        "task": "expression",
        "files": {"model": {"kind": "file", "location": onnx_path.name, "sha256": sha256_file(onnx_path)}},
        "preprocess": pre,
        "description": description,
        "license": f"MIT (weights trained by ferpipe on {trained_on}, research use)",
        "card": card,
        "extra": {"default": default, "metrics": metrics},
    }
    out = onnx_path.with_suffix(".json")
    out.write_text(json.dumps(spec, indent=2))
    return out


def _short(rep: dict, **more) -> dict:
    return {"accuracy": rep["accuracy"], "macro_f1": rep["macro_f1"], "ece": rep["ece"], "n": rep["n"], **more,
            "per_class_recall": {k: v["recall"] for k, v in rep["per_class"].items()}}  # fmt: skip


def _calibrated_spec(logits: np.ndarray, select: Sequence[LabelledFaces], offsets: Sequence[int], heads: Sequence[str],
                     onnx_path: Path, name: str, description: str, extra: dict, default: bool,
                     card: str | None = None, outputs: Sequence[str] | None = None,
                     domains: Sequence[np.ndarray] | None = None) -> dict:  # fmt: skip
    """Fit a temperature per head on its selection images, write the registry spec; returns the metrics
    (the first head's at the top, every head's under "heads", every domain's under "domains").

    domains: per head, the domain of each selection row. Where a head's rows come from several domains, its
    temperature is fitted with every domain weighing the same (a mixed-domain fit, so FER+'s sharp optimum does
    not decide the confidence on other faces), and each domain is scored on its own.
    """
    per_head, per_domain, temps = {}, {}, {}
    names = list(heads) or ["default"]
    for i, head in enumerate(names):
        z = logits[offsets[i] : offsets[i + 1], i * K : (i + 1) * K]
        labels = select[i].labels
        dom = np.asarray(domains[i]) if domains is not None else np.full(len(labels), head)
        t = fit_temperature(z, labels, weights=domain_weights(dom))
        zt = z / t
        probs = np.exp(zt - zt.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        temps[head] = t
        per_head[head] = _short(summarise(probs, labels), temperature=t)
        for d in dict.fromkeys(dom.tolist()):
            m = dom == d
            per_domain[d] = _short(summarise(probs[m], labels[m]), head=head)
    first = per_head[names[0]]
    metrics = {"accuracy": first["accuracy"], "macro_f1": first["macro_f1"], "ece": first["ece"],
               "temperature": first["temperature"], **extra}  # fmt: skip
    if len(names) > 1:
        metrics["heads"] = per_head
    if domains is not None:
        metrics["domains"] = per_domain
    write_spec(name, onnx_path, temps, metrics, description, default=default, card=card, outputs=outputs)
    return metrics


def _describe(heads: Sequence[str], width: int) -> str:
    data = " + ".join({"fer2013": "FER2013", "ferplus": "FER+ votes"}.get(h, h) for h in heads) or "FER2013"
    return f"ferpipe VGG-style CNN (width {width}) trained on {data}" + (
        f", one head per protocol (pipeline uses {heads[0]})" if len(heads) > 1 else ""
    )


def finish_cnn(result: dict, out_dir: Path, name: str, config: TrainConfig, default: bool = False) -> dict:
    """Calibrate on the selection split, export ONNX and its spec; returns the metrics."""
    onnx_path = export_onnx(result["net"], out_dir / f"{name}.onnx", flip_tta=config.flip_tta)
    heads = result["heads"] if len(result["heads"]) > 1 else ()
    extra = {"select_split": config.select_split, "best_epoch": result["state"]["best_epoch"], "config": asdict(config)}
    return _calibrated_spec(result["select_logits"], result["select"], result["offsets"], heads, onnx_path, name,
                            _describe(result["heads"], config.width), extra, default,
                            domains=result.get("domains"))  # fmt: skip


def export_model(checkpoints: list[str | os.PathLike], data: str | os.PathLike | Sequence[str | os.PathLike],
                 out_dir: str | os.PathLike, name: str, width: int = 48, flip_tta: bool | list[bool] = False,
                 int8: bool = False, select_split: str = "public_test", calibration_images: int = 1024,
                 default: bool = False, seed: int = 0, limit: int | None = None, card: str | None = None,
                 blend: dict[str, str] | None = None, mix_base: str | os.PathLike | None = None,
                 mix: float = 1.0) -> dict:  # fmt: skip
    """Trained CNNs -> one ONNX model (their averaged probabilities, optional flip TTA and int8) with a spec.

    blend: head -> registered model whose (calibrated) probabilities are averaged into that head. Each head
    then becomes an ONNX output of its own ("logits" for the first, "logits_<head>" for the others), so the
    pipeline, which reads the first head, never runs the blended partner.

    data: the datasets the members were trained on, one per head, in the heads' order (heads.json
    beside the checkpoints). The temperatures and the reported metrics come from the exported file
    itself run by ONNX Runtime on the selection split, so they are what `ferpipe eval` will see.
    """
    if not checkpoints:
        raise ValueError("export needs at least one --checkpoint or --flip-checkpoint")
    if calibration_images < 1:
        raise ValueError(f"calibration_images must be >= 1, got {calibration_images}")
    from ..onnx import create_session
    from .convert import quantize_int8

    paths = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    heads = {checkpoint_heads(c) for c in checkpoints}
    if len(heads) != 1:
        raise ValueError(f"the members were trained with different heads: {sorted(heads)}")
    heads = heads.pop()
    nets = [load_cnn(c, width) for c in checkpoints]
    if mix_base is not None:
        nets = [interpolate(_base_net(mix_base, width, paths, _heads_of(n), limit), n, mix) for n in nets]
    sets = [load_faces(p, "dev" if is_domain_file(p) else select_split, limit) for p in paths]
    sets = [s.subset(s.labelled) for s in sets]
    given = [s.protocol for s in sets]
    if heads and set(heads) - set(given):
        raise ValueError(f"the members have heads {list(heads)}; give --data for each ({sorted(set(given))} given)")
    names = list(heads) or [given[0]]

    def head_index(faces: LabelledFaces) -> int:
        return 0 if not heads or faces.protocol == "wild" else names.index(faces.protocol)

    by_head = [[s for s in sets if head_index(s) == i] for i in range(len(names))]
    ordered = [concat_faces(group) for group in by_head]
    domains = [np.concatenate([np.full(len(s), s.domain or names[i]) for s in group])
               for i, group in enumerate(by_head)]  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(nets, out / f"{name}.onnx", flip_tta=flip_tta)
    norm = lambda g: ((_to_tensor(g) - 0.5) / 0.5).numpy()  # noqa: E731  as in training; spec: mean 0.5, std 0.5
    if int8:
        xtr = np.concatenate([load_faces(p, "train", limit).images for p in paths])
        pick = np.random.default_rng(seed).choice(len(xtr), min(calibration_images, len(xtr)), replace=False)
        quantize_int8(onnx_path, onnx_path, norm(xtr[np.sort(pick)]))
    session = create_session(onnx_path)
    x = norm(np.concatenate([s.images for s in ordered]))
    logits = np.concatenate([session.run(None, {"input": x[i : i + 256]})[0] for i in range(0, len(x), 256)])
    offsets = list(np.cumsum([0] + [len(s) for s in ordered]))
    outputs = None
    if blend:
        if not heads or set(blend) - set(heads):
            raise ValueError(f"blend names heads {sorted(blend)}, but the members have {list(heads) or 'one head'}")
        own = {h: fit_temperature(logits[offsets[i] : offsets[i + 1], i * K : (i + 1) * K], ordered[i].labels,
                                  weights=domain_weights(domains[i])) for i, h in enumerate(heads)}  # fmt: skip
        outputs = blend_heads(onnx_path, list(heads), own, blend)
        session = create_session(onnx_path)
        logits = np.zeros((len(x), K * len(heads)), dtype=np.float32)
        for i, out_name in enumerate(outputs):
            rows = slice(offsets[i], offsets[i + 1])
            logits[rows, i * K : (i + 1) * K] = np.concatenate(
                [
                    session.run([out_name], {"input": x[rows][j : j + 256]})[0]
                    for j in range(0, offsets[i + 1] - offsets[i], 256)
                ]
            )
    members = ", ".join(Path(c).parent.name for c in checkpoints)
    flips = _flip_flags(flip_tta, len(nets))
    what = f"average of {len(nets)} CNNs" if len(nets) > 1 else "CNN"
    tta = "" if not any(flips) else ", flip TTA" if all(flips) else f", flip TTA on {sum(flips)} of {len(flips)}"
    description = _describe(heads, width).replace("CNN", what, 1) + tta + (", int8" if int8 else "")
    wild = [s.domain for s in sets if s.protocol == "wild"]
    if wild:
        description = description.replace(" trained on ", f" trained on {' + '.join(wild)} (pipeline head) + ", 1)
    extra = {"select_split": select_split, "members": members, "flip_tta": flips, "int8": int8,
             "passes_per_face": len(flips) + sum(flips)}  # fmt: skip
    if mix_base is not None:
        extra["weight_mix"] = {"base": Path(mix_base).name, "alpha": mix}
        description += f"; weights {mix:g} fine-tuned + {1 - mix:g} {Path(mix_base).stem}"
    if blend:
        extra["blend"] = {h: {"model": m, "own_temperature": round(float(own[h]), 4),
                              "partner_temperature": get_spec(m, task="expression").preprocess.temperature}
                          for h, m in blend.items()}  # fmt: skip
        description += "; " + ", ".join(f"{h} head averaged with {m}" for h, m in blend.items())
    return _calibrated_spec(logits, ordered, offsets, heads, onnx_path, name, description, extra, default, card,
                            outputs, domains=domains)  # fmt: skip


def _base_net(base: str | os.PathLike, width: int, paths: Sequence, heads: int, limit: int | None):
    """The network a fine-tuned one started from: a best.pt, or a shipped ONNX file (recovered, cnn_from_onnx)."""
    if str(base).endswith(".onnx"):
        images = np.concatenate([load_faces(p, "train", limit or 4096).images for p in paths[:1]])
        return cnn_from_onnx(base, width, images, heads)
    return load_cnn(base, width, heads)


def interpolate(base, tuned, alpha: float):
    """Weight-space ensemble of a fine-tuned network with the one it started from (WiSE-FT, Wortsman et al. 2022):
    (1 - alpha) * base + alpha * tuned, BatchNorm statistics included. At one network's cost it keeps most of the
    base's accuracy on its own data and most of the fine-tuning's gain elsewhere."""
    if not 0 <= alpha <= 1:
        raise ValueError(f"mix must be in [0, 1], got {alpha}")
    sb, st = base.state_dict(), tuned.state_dict()
    if set(sb) != set(st) or any(sb[k].shape != st[k].shape for k in sb):
        raise ValueError("the base network does not have the fine-tuned one's layout (another width or heads?)")
    tuned.load_state_dict({k: (sb[k].float() * (1 - alpha) + st[k].float() * alpha).to(st[k].dtype)
                           if st[k].is_floating_point() else st[k] for k in st})  # fmt: skip
    return tuned.eval()


def blend_heads(onnx_path: Path, heads: list[str], temperatures: dict[str, float], blend: dict[str, str]) -> list[str]:
    """Rewrite an exported multi-head model so that each head is an output of its own and each head in ``blend``
    is the log of the mean of its calibrated probabilities and those of a registered partner model (computed by
    the partner's own graph, on the same input). Returns the output name of every head, in order."""
    import onnx
    from onnx import TensorProto, compose, helper, numpy_helper

    from ..registry import fetch

    model = onnx.load(str(onnx_path))
    graph = model.graph
    raw = graph.output[0].name
    graph.output.pop()
    for node in graph.node:  # the concatenated logits become an inner tensor
        node.output[:] = [f"{raw}_all" if o == raw else o for o in node.output]
    names, new_nodes, inits = [], [], []
    for i, head in enumerate(heads):
        out = "logits" if i == 0 else f"logits_{head}"
        names.append(out)
        starts, ends = f"{head}_starts", f"{head}_ends"
        inits += [numpy_helper.from_array(np.array([i * K], np.int64), starts),
                  numpy_helper.from_array(np.array([(i + 1) * K], np.int64), ends),
                  numpy_helper.from_array(np.array([1], np.int64), f"{head}_axis")]  # fmt: skip
        sliced = out if head not in blend else f"{head}_own"
        new_nodes.append(helper.make_node("Slice", [f"{raw}_all", starts, ends, f"{head}_axis"], [sliced]))
        if head in blend:
            spec = get_spec(blend[head], task="expression")
            if spec.preprocess.size != 48 or spec.preprocess.channels != 1 or spec.preprocess.layout != "NCHW":
                raise ValueError(f"{blend[head]} takes other input than this model; it cannot be blended in")
            partner = compose.add_prefix(onnx.load(str(fetch(spec)["model"])), f"{head}_partner_", rename_inputs=False)
            pg = partner.graph
            if pg.input[0].name != graph.input[0].name:
                raise ValueError(f"{blend[head]}'s input is named {pg.input[0].name!r}, not {graph.input[0].name!r}")
            graph.node.extend(pg.node)
            graph.initializer.extend(pg.initializer)
            graph.value_info.extend(pg.value_info)
            t_own, t_partner = temperatures[head], spec.preprocess.temperature
            inits += [numpy_helper.from_array(np.array(t_own, np.float32), f"{head}_t_own"),
                      numpy_helper.from_array(np.array(t_partner, np.float32), f"{head}_t_partner"),
                      numpy_helper.from_array(np.array(0.5, np.float32), f"{head}_half")]  # fmt: skip
            new_nodes += [
                helper.make_node("Div", [sliced, f"{head}_t_own"], [f"{head}_own_z"]),
                helper.make_node("Softmax", [f"{head}_own_z"], [f"{head}_own_p"], axis=1),
                helper.make_node("Div", [pg.output[0].name, f"{head}_t_partner"], [f"{head}_partner_z"]),
                helper.make_node("Softmax", [f"{head}_partner_z"], [f"{head}_partner_p"], axis=1),
                helper.make_node("Add", [f"{head}_own_p", f"{head}_partner_p"], [f"{head}_sum"]),
                helper.make_node("Mul", [f"{head}_sum", f"{head}_half"], [f"{head}_mean"]),
                helper.make_node("Log", [f"{head}_mean"], [out]),
            ]
            for imp in partner.opset_import:  # the partner's operator sets, where the model lacks them
                if imp.domain not in {o.domain for o in model.opset_import}:
                    model.opset_import.append(imp)
        graph.output.append(helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", K]))
    graph.node.extend(new_nodes)
    graph.initializer.extend(inits)
    onnx.checker.check_model(model)
    onnx.save(model, str(onnx_path))
    return names


def register(out_dir: Path, name: str, registry_dir: Path | None = None) -> Path:
    """Copy an exported model and its spec into the cache registry, so --model NAME finds it."""
    import shutil

    from ..config import cache_dir

    dest = registry_dir or cache_dir() / "registry"
    dest.mkdir(parents=True, exist_ok=True)
    for suffix in (".onnx", ".json"):
        shutil.copy2(out_dir / f"{name}{suffix}", dest / f"{name}{suffix}")
    return dest / f"{name}.json"


def _dequantized(model) -> dict[str, np.ndarray]:
    """Float values of every initializer of an ONNX model, DequantizeLinear outputs included (int8 QDQ files)."""
    from onnx import helper, numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "DequantizeLinear" and all(i in values for i in node.input):
            q, scale, zero = (values[i] for i in node.input[:3]) if len(node.input) > 2 else (
                values[node.input[0]], values[node.input[1]], np.zeros((), np.int8))  # fmt: skip
            axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 1)
            if scale.ndim == 1 and q.ndim > 1:
                shape = [1] * q.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
            values[node.output[0]] = ((q.astype(np.float32) - zero.astype(np.float32)) * scale).astype(np.float32)
    return values


def cnn_from_onnx(path: str | os.PathLike, width: int, images: np.ndarray, heads: int | None = None):
    """A trainable CNN recovered from one of ferpipe's exported ONNX files (int8 or float, flip TTA or not).

    The exported graph has each BatchNorm folded into its convolution. The recovered network keeps the folded
    weights and puts back BatchNorms that reproduce them exactly in eval mode and closely in train mode: each
    BN's running statistics are those of its convolution's output on ``images`` (gray (N, 48, 48) uint8), and its
    scale and shift undo the normalisation. This lets a shipped model be fine-tuned when its checkpoint is gone.
    """
    import onnx
    from onnx import helper

    torch = _torch()
    model = onnx.load(str(path))
    values = _dequantized(model)
    # the first member's own path: convolutions and the final Gemm outside any flipped ("_1") or partner branch
    own = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm") and "_1/" not in n.output[0]
           and not n.output[0].startswith(tuple(f"{h}_partner_" for h in ("fer2013", "ferplus")))
           and "/members.0/" in n.output[0]]  # fmt: skip
    convs = [n for n in own if n.op_type == "Conv"]
    gemm = [n for n in own if n.op_type == "Gemm"]
    if len(convs) != 8 or len(gemm) != 1:
        raise ValueError(f"{Path(path).name}: not one of ferpipe's VGG-style exports ({len(convs)} convolutions)")
    w_lin = values[gemm[0].input[1]]
    if next((helper.get_attribute_value(a) for a in gemm[0].attribute if a.name == "transB"), 0) == 0:
        w_lin = w_lin.T
    found = w_lin.shape[0] // K
    net = build_cnn(width, heads or found)
    conv_mods = [m for m in net if isinstance(m, torch.nn.Conv2d)]
    bn_mods = [m for m in net if isinstance(m, torch.nn.BatchNorm2d)]
    if conv_mods[0].out_channels != values[convs[0].input[1]].shape[0]:
        raise ValueError(f"{Path(path).name} is not a width-{width} CNN")
    biases = []
    with torch.no_grad():
        for conv, bn, node in zip(conv_mods, bn_mods, convs, strict=True):
            conv.weight.copy_(torch.from_numpy(values[node.input[1]]))
            b = torch.from_numpy(values[node.input[2]]) if len(node.input) > 2 else torch.zeros(conv.out_channels)
            biases.append(b)
            bn.running_mean.zero_()
            bn.running_var.fill_(1 - bn.eps)
            bn.weight.fill_(1.0)
            bn.bias.copy_(b)
        lin = net[-1]
        w = torch.from_numpy(w_lin)
        b = torch.from_numpy(values[gemm[0].input[2]])
        if heads and heads != found:  # grow: every new head starts from the first
            w, b = w[:K].repeat(heads, 1), b[:K].repeat(heads)
        lin.weight.copy_(w)
        lin.bias.copy_(b)
        # statistics of each convolution's output under the exact folded network (eval mode)
        stats = []
        hooks = [c.register_forward_hook(lambda _m, _i, o: stats.append((o.mean((0, 2, 3)), o.var((0, 2, 3)))))
                 for c in conv_mods]  # fmt: skip
        net.eval()
        pick = np.random.default_rng(0).permutation(len(images))[:2048]
        net((_to_tensor(images[pick]) - 0.5) / 0.5)
        for h in hooks:
            h.remove()
        for bn, (mean, var), bias in zip(bn_mods, stats, biases, strict=True):
            bn.running_mean.copy_(mean)
            bn.running_var.copy_(var)
            bn.weight.copy_(torch.sqrt(var + bn.eps))
            bn.bias.copy_(mean + bias)
    return net.eval()
