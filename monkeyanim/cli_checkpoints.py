"""Commands about checkpoint files: list the bundled ones, convert the authors' (registered on
cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli import OutputOpt, OverwriteOpt, app, console, print_row
from .files import check_output

NARROW_COLUMNS = 110  # a terminal narrower than this gets a block per checkpoint
UNUSABLE = "unusable: "  # how a registered file that cannot be loaded is listed


@app.command()
def convert(checkpoint: Annotated[Path, typer.Argument(help="Authors' .pth.tar checkpoint.")],
            output: OutputOpt,
            config: Annotated[str, typer.Option(
                "--config", help="taichi, nemo, bair, moving-gif, vox, vox-full, actions, "
                                 "shapes, the authors' .yaml config or a .json config.")],
            name: Annotated[str | None, typer.Option(help="Name recorded in the metadata.")] = None,
            overwrite: OverwriteOpt = False) -> None:
    """Convert an authors' Monkey-Net checkpoint into a monkeyanim .safetensors file."""
    from .checkpoint import convert_authors_checkpoint, save_checkpoint
    from .hub import resolve_config

    check_output(output, overwrite, (".safetensors",), inputs=(checkpoint, Path(config)))
    model = convert_authors_checkpoint(checkpoint, resolve_config(config))
    model.provenance.update(name=name or checkpoint.name.split(".")[0],
                            source="authors' checkpoint",
                            config=Path(config).name)  # (not where it lay on this machine)
    save_checkpoint(model, output)
    parameters = sum(p.numel() for p in model.parameters())
    console.print(f"wrote {output} ({parameters:,} parameters, frame size "
                  f"{model.config.frame_size[0]}x{model.config.frame_size[1]})")


@app.command()
def checkpoints() -> None:
    """List the bundled checkpoints and those downloaded from the Hub.

    The exit code is 1 if one of them cannot be used."""
    from .hub import available_models, cached_hub_checkpoints

    header = ("name", "size", "frame", "iterations", "L1 (baseline)", "data", "file",
              "predictor L1 (still)")
    rows = [*map(_bundled_row, available_models()),
            *(_row(spec, lambda path=path: path, None, "-", "no")
              for spec, path in cached_hub_checkpoints())]  # (a cache it cannot read: none)
    if not console.is_terminal:  # one tab-separated line each: readable and parseable, the
        # name as --checkpoint takes it and the default in a column of its own
        for row in (header + ("default",), *rows):
            print_row(row)
    elif console.width < NARROW_COLUMNS:  # eight columns do not fit: a block each
        for name, *cells, default in rows:
            console.print(escape(name + (" (default)" if default == "yes" else "")), style="bold")
            for label, cell in zip(header[1:], cells):
                console.print(escape(f"  {label}: {cell}"))
    else:
        table = Table(*header)
        for column in table.columns:  # short values whole ("shapes (defau…" said nothing),
            # the long ones (names of Hub files, data, file) wrapped around them
            column.no_wrap = column.header not in ("name", "data", "file",
                                                   "predictor L1 (still)")
            column.overflow = "fold"
        for name, *cells, default in rows:
            table.add_row(escape(name + (" (default)" if default == "yes" else "")),
                          *map(escape, cells))
        console.print(table)
    if any(row[header.index(column)].startswith(UNUSABLE) for row in rows
           for column in ("file", "predictor L1 (still)")):
        raise typer.Exit(1)  # listed all the same; a script checking an install sees it


def _bundled_row(name: str) -> tuple[str, ...]:
    """A registered checkpoint's row: see ``_row``."""
    from .hub import DEFAULT_MODEL, bundled_path, registry_entry

    return _row(name, lambda: bundled_path(name), registry_entry(name).description,
                _predictor_cell(name), "yes" if name == DEFAULT_MODEL else "no")


def _row(name: str, locate, description: str | None, predictor: str,
         default: str) -> tuple[str, ...]:
    """One checkpoint's row, its file found by ``locate()``; a missing or damaged file is
    shown as such, so that the others are still listed. ``description``: None to take the
    file's own (its provenance's data)."""
    from .checkpoint import read_metadata
    from .errors import CheckpointError

    try:
        path = locate()
        config, provenance = read_metadata(path)
    except CheckpointError as exc:
        return (name, "-", "-", "-", "-", description or "?", f"{UNUSABLE}{exc}", predictor,
                default)
    metrics = provenance.get("metrics", {})
    l1 = (f"{metrics['reconstruction_l1']} ({metrics.get('static_baseline_l1', '?')})"
          if "reconstruction_l1" in metrics else "-")
    return (name, f"{path.stat().st_size / 1e6:.1f} MB",
            f"{config.frame_size[0]}x{config.frame_size[1]}",
            str(provenance.get("iterations", "?")), l1,
            description or str(provenance.get("data", "?")), str(path), predictor, default)


def _predictor_cell(name: str) -> str:
    """The held-out keypoint L1 of the predictor shipped with checkpoint ``name`` and that of
    its first frame kept still; "-" when none ships."""
    from .errors import CheckpointError
    from .hub import available_predictors, bundled_predictor
    from .prediction import predictor_provenance

    if name not in available_predictors():
        return "-"
    try:
        scores = predictor_provenance(bundled_predictor(name))
    except CheckpointError as exc:
        return f"{UNUSABLE}{exc}"
    if "test_l1" not in scores:
        return "not measured"
    return f"{scores['test_l1']:.4f} ({scores['test_static_l1']:.4f})"
