"""Terminal output shared by the CLI modules: consoles, progress bars with an ETA, and flag options."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperArgument, TyperCommand, TyperGroup

err = Console(stderr=True)
out = Console()


def flag(name: str, help: str) -> bool:
    """A boolean --flag option without a type column in --help."""
    return typer.Option(False, name, help=help, metavar="")


def progress_bar() -> Progress:
    """A transient progress bar with elapsed time and ETA on stderr (silent when stderr is not a terminal)."""
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


class Command(TyperCommand):
    """Plain help: arguments by their metavar (``SOURCE...``), no ``<type>`` columns for flags or --help."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar:
                name = param.metavar if param.required else f"[{param.metavar}]"
                param._usage_display_name = lambda name=name: name  # type: ignore[method-assign]
                param._rich_display_name = lambda name=param.metavar: name  # type: ignore[method-assign]
                param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


class Group(TyperGroup):
    """A command group whose --help has no type column either."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None:
            opt.metavar = ""
        return opt


def typer_app(**kwargs) -> typer.Typer:
    """A Typer app whose commands use ``Command`` (and the app itself ``Group``)."""
    kwargs.setdefault("cls", Group)
    app = typer.Typer(**kwargs)
    command = app.command

    def plain_command(*args, **kw):
        kw.setdefault("cls", Command)
        return command(*args, **kw)

    app.command = plain_command  # type: ignore[method-assign]
    return app
