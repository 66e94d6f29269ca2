"""Command line: thin Typer commands over the library; the only module that prints."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .errors import InputError, MonkeyAnimError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Animate a still image with the motion of a driving video (Monkey-Net).")
err_console = Console(stderr=True, highlight=False, soft_wrap=True)
console = Console(highlight=False, soft_wrap=True)

# Options shared by several commands, defined once.
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output path.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="Architecture of an authors' checkpoint: a preset name or a .json file.")]


def check_output(path: Path, overwrite: bool) -> Path:
    """Refuse to clobber an existing output, and fail early if its folder is not writable."""
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists (use --overwrite to replace it)")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output folder does not exist: {folder}")
    if not os.access(folder, os.W_OK):
        raise InputError(f"output folder is not writable: {folder}")
    return path


@app.command()
def convert(checkpoint: Annotated[Path, typer.Argument(help="Authors' .pth.tar checkpoint.")],
            output: OutputOpt,
            config: Annotated[str, typer.Option(
                "--config", help="taichi, nemo, bair, moving-gif, vox, vox-full, actions, "
                                 "shapes, or a .json config.")],
            name: Annotated[str | None, typer.Option(help="Name recorded in the metadata.")] = None,
            overwrite: OverwriteOpt = False) -> None:
    """Convert an authors' Monkey-Net checkpoint into a monkeyanim .safetensors file."""
    from .checkpoint import convert_authors_checkpoint, save_checkpoint
    from .hub import resolve_config

    check_output(output, overwrite)
    model_config = resolve_config(config)
    model = convert_authors_checkpoint(checkpoint, model_config)
    model.provenance.update(name=name or checkpoint.name.split(".")[0],
                            source="authors' checkpoint", config=str(config))
    save_checkpoint(model, output)
    parameters = sum(p.numel() for p in model.parameters())
    console.print(f"wrote {output} ({parameters:,} parameters, frame size "
                  f"{model.config.frame_size[0]}x{model.config.frame_size[1]})")


def _planned(command: str, issue: str) -> None:
    raise MonkeyAnimError(f"'{command}' is not available yet ({issue})")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train() -> None:
    """Train on a folder of videos (not available yet)."""
    _planned("train", "see the training issue")


def main() -> None:
    """Entry point: library errors become one readable line and exit code 1."""
    try:
        app()
    except MonkeyAnimError as exc:
        if os.environ.get("MONKEYANIM_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(1)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
