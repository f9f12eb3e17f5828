"""The model lab's commands (train, export-model, eval), registered on the main ``ferpipe`` app.

User errors raise (FerpipeError, ValueError, OSError); the main app's one error boundary prints them.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from ..console import err, flag, out, progress_bar


def register(app: typer.Typer) -> None:
    app.command("eval")(evaluate)
    app.command()(train)
    app.command("export-model")(export_model)


def evaluate(
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="FER2013, FER+ or multi-domain Parquet, or a folder with one subfolder per expression; repeat for a "
        "cross-domain table (one row per set).",
        metavar="PATH",
    ),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Only rows of this split, e.g. public_test (dev: a domain file's held-out split).",
        metavar="NAME",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Expression model (default: the registry's default).", metavar="NAME"
    ),
    limit: int | None = typer.Option(
        None, "--limit", help="Evaluate on a fixed random subset of N images.", metavar="N"
    ),
    flip: bool = flag("--flip", "Test-time augmentation: average with the mirrored crop."),
    full_image: bool = flag("--full-image", "DATA holds full images: detect, take the largest face, align, classify."),
    head: str = typer.Option(
        "auto",
        "--head",
        metavar="NAME",
        help="Output head of a multi-head model; auto: the data's labelling protocol if the model has it.",
    ),
    as_json: bool = flag("--json", "Print the report as one JSON object."),
) -> None:
    """Accuracy of an expression model on labelled crops, or on full images through the pipeline's path."""
    from ..registry import default_expression_model
    from .data import is_domain_file
    from .evaluate import domain_row, evaluate_data, evaluate_full_image

    name = model or default_expression_model()
    reports = []
    for path in data:
        if full_image:
            with progress_bar() as bar:
                task = bar.add_task(f"images of {path.name}", total=None, unit="images")
                reports.append(evaluate_full_image(path, model=name, head=None if head == "auto" else head,
                                                   limit=limit,
                                                   progress=lambda d, t, task=task: bar.update(task, completed=d, total=t)))  # fmt: skip
        else:
            # several sets: FER2013/FER+ files are scored on their public_test, domain files on their dev split
            chosen = split if split or len(data) == 1 else ("dev" if is_domain_file(path) else "public_test")
            reports.append(evaluate_data(path, split=chosen, model=name, limit=limit, flip=flip, head=head))
    if as_json:
        print(json.dumps(reports[0] if len(reports) == 1 else
                         {"model": name, "domains": [domain_row(r) for r in reports], "reports": reports}))  # fmt: skip
        return
    if len(reports) > 1:
        table = Table("set", "images", "accuracy", "macro-F1", "ECE", "faces found",
                      *(e for e in reports[0]["per_class"]), title=f"{name}: one row per set (recall per expression)")  # fmt: skip
        for r in reports:
            row = domain_row(r)
            table.add_row(escape(row["domain"]), f"{row['n']:,}", f"{row['accuracy']:.3f}", f"{row['macro_f1']:.3f}",
                          f"{row['ece']:.3f}", f"{row['face_found']:.1%}",
                          *(f"{v:.2f}" for v in row["recall"].values()))  # fmt: skip
        out.print(table)
        return
    report = reports[0]
    found = f", faces found in {report['face_found']:.1%}" if full_image or report.get("protocol") == "wild" else ""
    head_note = f", head {report['head']}" if report.get("head") else ""
    out.print(f"model {report['model']}{head_note}: accuracy {report['accuracy']:.4f} on {report['n']} images "
              f"(macro-F1 {report['macro_f1']:.4f}, ECE {report['ece']:.4f}, {report['ms_per_face']:.3f} ms/face{found})")  # fmt: skip
    table = Table("expression", "recall", "n")
    for expr, r in report["per_class"].items():
        table.add_row(expr, f"{r['recall']:.3f}", str(r["n"]))
    out.print(table)


def train(
    data: list[Path] = typer.Option(
        ...,
        "--data",
        metavar="PATH",
        help="FER2013 or FER+ Parquet, a multi-domain Parquet (with person), or an image folder; repeat to train "
        "one head per labelling protocol (multi-domain data trains the first head).",
    ),
    out_dir: Path = typer.Option(
        ..., "--out", help="Folder for checkpoints and the exported model (resumes if present).", metavar="DIR"
    ),
    name: str = typer.Option("ferpipe-cnn", "--name", help="Registry name of the exported model.", metavar="NAME"),
    arch: str = typer.Option("vgg", "--arch", help="vgg (CNN), svm-hog (HOG + linear SVM) or cnn-svm.", metavar="ARCH"),
    cnn_checkpoint: Path | None = typer.Option(
        None, "--cnn-checkpoint", help="best.pt of a CNN, for cnn-svm.", metavar="FILE"
    ),
    width: int = typer.Option(48, "--width", help="CNN width (channels of the first block).", metavar="N"),
    epochs: int = typer.Option(40, "--epochs", metavar="N"),
    batch_size: int = typer.Option(128, "--batch-size", metavar="N"),
    lr: float = typer.Option(0.05, "--lr", help="Peak learning rate of the one-cycle schedule.", metavar="RATE"),
    patience: int = typer.Option(
        12, "--patience", help="Early stopping: epochs without a better selection accuracy.", metavar="N"
    ),
    limit: int | None = typer.Option(None, "--limit", help="Use a random subset of N images per split.", metavar="N"),
    seed: int = typer.Option(0, "--seed", metavar="N"),
    label_smoothing: float = typer.Option(
        0.0, "--label-smoothing", help="Cross-entropy label smoothing (0-0.5).", metavar="X"
    ),
    class_weight_power: float = typer.Option(
        0.5, "--class-weight-power", help="Class weights (count/mean)^-p: 0 unweighted, 1 fully balanced.", metavar="P"
    ),
    init: Path | None = typer.Option(
        None,
        "--init",
        help="Start from these weights (a best.pt, or an exported ferpipe .onnx) instead of random.",
        metavar="FILE",
    ),
    swa_start: int = typer.Option(
        0, "--swa-start", help="From this epoch on, average the weights (SWA) at --swa-lr; 0: off.", metavar="N"
    ),
    swa_lr: float = typer.Option(0.01, "--swa-lr", help="Constant learning rate during SWA.", metavar="RATE"),
    augment: str = typer.Option(
        "fer", "--augment", help="fer (FER2013-like crops) or domain (video-like crops too).", metavar="KIND"
    ),
    ferplus_target: str = typer.Option(
        "votes", "--ferplus-target", help="FER+ heads learn the votes or the majority.", metavar="KIND"
    ),
    epoch_size: int | None = typer.Option(
        None,
        "--epoch-size",
        help="Images drawn per epoch, weighted by dataset (default: one pass over all).",
        metavar="N",
    ),
    domain_share: float = typer.Option(
        0.5, "--domain-share", help="With --epoch-size: share of draws from multi-domain data.", metavar="X"
    ),
    hold_out: str | None = typer.Option(
        None, "--hold-out", help="Leave-one-domain-out: leave this --data (file stem, e.g. expw) out.", metavar="NAME"
    ),
    class_balance: float = typer.Option(
        0.0, "--class-balance", help="With --epoch-size: 0 draws classes as found, 1 draws them evenly.", metavar="B"
    ),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: all cores).", metavar="N"),
    no_bf16: bool = flag("--no-bf16", "Train in float32 instead of bf16 autocast."),
    train_split: str = typer.Option("train", "--train-split", metavar="NAME"),
    select_split: str = typer.Option(
        "public_test", "--select-split", help="Split for early stopping and calibration.", metavar="NAME"
    ),
    no_register: bool = flag("--no-register", "Do not add the model to the cache registry."),
) -> None:
    """Train an expression classifier, export it to ONNX with its registry spec, and register it."""
    from .train import TrainConfig, finish_cnn, train_cnn

    config = TrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                         seed=seed, label_smoothing=label_smoothing, class_weight_power=class_weight_power,
                         bf16=not no_bf16, threads=threads, train_split=train_split, select_split=select_split,
                         limit=limit, flip_tta=False, init=str(init) if init else None, swa_start=swa_start,
                         swa_lr=swa_lr, augment=augment, ferplus_target=ferplus_target,
                         epoch_size=epoch_size, domain_share=domain_share, hold_out=hold_out,
                         class_balance=class_balance)  # fmt: skip
    if arch in ("svm-hog", "cnn-svm"):
        from .baselines import run_cnn_svm, run_svm_hog

        if arch == "svm-hog":
            res = run_svm_hog(data[0], out_dir, train_split, select_split, limit)
        else:
            if cnn_checkpoint is None:
                raise ValueError("--arch cnn-svm needs --cnn-checkpoint PATH/best.pt and the CNN's --width")
            res = run_cnn_svm(data[0], out_dir, cnn_checkpoint, width, train_split, select_split, limit)
        out.print(f"{arch}: {select_split} accuracy {res['accuracy']:.4f}, macro-F1 {res['macro_f1']:.4f} "
                  f"(C={res['C']}); saved {Path(out_dir) / (arch + '.json')}")  # fmt: skip
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("ETA"), TimeRemainingColumn(), console=err, disable=not err.is_terminal) as bar:  # fmt: skip
        epochs_task = bar.add_task("epochs", total=config.epochs)
        steps_task = bar.add_task("steps", total=None)

        def on_step(step: int, steps: int) -> None:
            bar.update(steps_task, completed=step, total=steps)

        def on_epoch(epoch: int, total: int, m: dict) -> None:
            bar.update(epochs_task, completed=epoch)
            heads = ", ".join(f"{h} {a:.4f}" for h, a in m["head_acc"].items())
            err.print(f"epoch {epoch}/{total}: loss {m['loss']:.3f}, {config.select_split} accuracy "
                      f"{m['select_acc']:.4f} ({heads}; {m['seconds']:.0f}s)")  # fmt: skip

        result = train_cnn(data, out_dir, config, on_step=on_step, on_epoch=on_epoch)
    metrics = finish_cnn(result, Path(out_dir), name, config)
    _register_and_say(out_dir, name, no_register,
                      f"{name}: {config.select_split} accuracy {metrics['accuracy']:.4f}, ECE {metrics['ece']:.4f} "
                      f"(temperature {metrics['temperature']:.2f}, best epoch {metrics['best_epoch']})")  # fmt: skip


def _register_and_say(out_dir: Path, name: str, no_register: bool, summary: str) -> None:
    """Add an exported model to the cache registry (unless told not to), then print its summary."""
    from .train import register

    spec = None if no_register else register(Path(out_dir), name)
    out.print(summary)
    if spec:
        out.print(f"registered as {name!r} ({spec}); use --model {name}")


def export_model(
    checkpoints: list[Path] = typer.Option(
        [], "--checkpoint", help="best.pt of a trained CNN; repeat to average several.", metavar="FILE"
    ),
    flip_checkpoints: list[Path] = typer.Option(
        [],
        "--flip-checkpoint",
        help="Like --checkpoint, but averaged over the crop and its mirror image.",
        metavar="FILE",
    ),
    data: list[Path] = typer.Option(
        ...,
        "--data",
        help="The members' training data, one per head (calibration and metrics); repeatable.",
        metavar="PATH",
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the ONNX file and its registry spec.", metavar="DIR"),
    name: str = typer.Option("ferpipe-cnn", "--name", help="Registry name of the exported model.", metavar="NAME"),
    width: int = typer.Option(48, "--width", help="Width the checkpoints were trained with.", metavar="N"),
    flip: bool = flag("--flip", "Every member also sees the mirror image (flip TTA in the graph)."),
    int8: bool = flag("--int8", "Static int8 quantisation, calibrated on training images."),
    select_split: str = typer.Option(
        "public_test", "--select-split", help="Split for the temperature and metrics.", metavar="NAME"
    ),
    default: bool = flag("--default", "Mark the model as the registry default."),
    limit: int | None = typer.Option(
        None, "--limit", help="Use a fixed random subset of N images per split (quick trials).", metavar="N"
    ),
    card: str | None = typer.Option(
        None, "--card", help="Model card file name, stored in the spec (e.g. NAME.md).", metavar="FILE"
    ),
    blend: list[str] = typer.Option(
        [],
        "--blend",
        help="HEAD=MODEL: average a registered model's probabilities into that head (its own output, "
        "which the pipeline does not run).",
        metavar="HEAD=MODEL",
    ),
    mix_base: Path | None = typer.Option(
        None,
        "--mix-base",
        help="The network the checkpoints were fine-tuned from (best.pt or a ferpipe .onnx): "
        "export a weight mix of the two (WiSE-FT).",
        metavar="FILE",
    ),
    mix: float = typer.Option(1.0, "--mix", help="With --mix-base: the fine-tuned weights' share (0-1).", metavar="X"),
    no_register: bool = flag("--no-register", "Do not add the model to the cache registry."),
) -> None:
    """Export trained CNN checkpoints as one calibrated ONNX model (ensemble, flip TTA, int8) and register it."""
    from .train import export_model as export

    pairs = {}
    for item in blend:
        head, sep, partner = item.partition("=")
        if not sep or not head or not partner:
            raise ValueError(f"--blend takes HEAD=MODEL, got {item!r}")
        pairs[head] = partner
    with err.status(f"exporting {name} ..."):
        members = [*checkpoints, *flip_checkpoints]
        flips = [flip] * len(checkpoints) + [True] * len(flip_checkpoints)
        m = export(members, data, out_dir, name, width=width, flip_tta=flips, int8=int8,
                   select_split=select_split, default=default, limit=limit, card=card, blend=pairs or None,
                   mix_base=mix_base, mix=mix)  # fmt: skip
    _register_and_say(out_dir, name, no_register,
                      f"{name}: {select_split} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                      f"ECE {m['ece']:.4f} (temperature {m['temperature']:.2f}); saved {Path(out_dir) / (name + '.onnx')}")  # fmt: skip
