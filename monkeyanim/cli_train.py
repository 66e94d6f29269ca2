"""Commands for preparing data, training and evaluating (registered on cli.app)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from .cli import (BatchOpt, CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FidWeightsOpt, JsonOpt,
                  OverwriteOpt, PrecisionOpt, RefineOpt, app, check_refine, console, counted,
                  err_console, flag, load_checkpoint, progress_bar, require_all, torch_device, warn,
                  warn_unreadable)
from .errors import InputError, Interrupted
from .files import check_json_name, check_output
from .stops import StopRequest

SUBJECTS = {None: None, "face": "face_model", "body": "body_model"}  # --subject: metadata key


@app.command()
def train(data_dir: Annotated[Path, typer.Argument(
              help="Folder with train/ (and val/, test/) videos, or a folder of videos.")],
          output: Annotated[Path, typer.Option("--output", "-o", help="Run folder.")],
          config: Annotated[str | None, typer.Option(
              help="Preset (shapes, actions, taichi, nemo, bair, moving-gif, vox, vox-full) "
                   "or .yaml; default: shapes (on --resume: the run's own).")] = None,
          iterations: Annotated[int | None, typer.Option(help="Total iterations.")] = None,
          batch_size: Annotated[int | None, typer.Option(
              "--batch-size", help="Pairs of frames per iteration in each process (under "
                                   "torchrun, each GPU); default: the config's.")] = None,
          lr: Annotated[float | None, typer.Option(
              "--lr", help="Adam's learning rate (divided by 10 at each drop).")] = None,
          device: DeviceOpt = "auto", precision: PrecisionOpt = "fp32",
          resume: Annotated[bool, flag("--resume", help="Continue the run in --output.")] = False,
          checkpoint_every: Annotated[int | None, typer.Option(
              help="Save the weights and the state for --resume every N iterations.")] = None,
          sample_every: Annotated[int | None, typer.Option(
              help="Every N iterations, a picture of source | target | prediction in "
                   "samples/.")] = None,
          validate_every: Annotated[int | None, typer.Option(
              help="Every N iterations, the reconstruction L1 on DATA_DIR/val/ (videos not "
                   "trained on); the best weights are kept as best.safetensors.")] = None,
          workers: Annotated[int | None, typer.Option(help="Data loader processes.")] = None,
          seed: Annotated[int | None, typer.Option(
              help="Random seed of the weights and of the pairs drawn.")] = None,
          init: Annotated[str | None, typer.Option(
              help="Fine-tune from this checkpoint (name, file or hf://); without --config "
                   "its architecture is the run's.")] = None,
          subject: Annotated[str | None, typer.Option(
              help="face or body: recorded in the checkpoint, so that animate crops faces by "
                   "default and evaluate picks the keypoint detector for AKD/MKR.")] = None,
          max_minutes: Annotated[float | None, typer.Option(
              help="Stop after this many minutes with a checkpoint (--resume carries on). "
                   "Ctrl-C does the same after the current iteration.")] = None) -> None:
    """Train Monkey-Net on your own videos (torchrun --nproc_per_node N -m monkeyanim train ...)."""
    import dataclasses

    from .train import Trainer, finish

    _check_train_options(init, resume, subject, lr, max_minutes)
    device = torch_device(device)
    start = load_checkpoint(init, None, "cpu") if init is not None else None
    model_cfg, train_cfg = _run_configs(output, config, resume, start)
    overrides = {k: v for k, v in dict(iterations=iterations, batch_size=batch_size, lr=lr,
                                       checkpoint_every=checkpoint_every, sample_every=sample_every,
                                       validate_every=validate_every,
                                       num_workers=workers, seed=seed).items() if v is not None}
    train_cfg = dataclasses.replace(train_cfg, **overrides)
    trainer = Trainer(data_dir, output, model_cfg, train_cfg, device, precision, resume, start)
    if resume and lr is not None:
        trainer.set_lr(lr)  # the saved optimizer state carries the rate it had reached
    elif resume and config is not None:
        trainer.rebase_lr(train_cfg.lr)  # the file's rate, its drops passed kept
    if start is not None and not start.provenance.get("name"):  # a file: which one
        trainer.model.provenance["initialised_from"] = init
    if subject is not None:  # one kind of subject (an --init checkpoint's may be another)
        for key in filter(None, SUBJECTS.values()):
            trainer.model.provenance[key] = key == SUBJECTS[subject]
    if trainer.rank == 0:
        _announce(trainer, data_dir)
    again = ("interrupted again: stopped at once; the run folder holds the last checkpoint "
             "(--resume carries on from it)")
    with _training_view(trainer) as on_step, StopRequest(max_minutes, again) as stop:
        trainer.run(on_step, stop)
    finish(trainer)
    _report_end(trainer, stop, output)


def _run_configs(output: Path, config: str | None, resume: bool, start):
    """(model, train) configs: a resumed run's own (with --config: that file's training
    settings, its architecture being the run's), else the preset or YAML file's, with the
    architecture of --init's checkpoint unless a YAML file names one (a preset gives its
    training settings alone, to a resumed run that started from --init's weights too: one
    started with --init mgif --config moving-gif resumes with the same options)."""
    from .checkpoint import MODEL_FILE, STATE_FILE, read_metadata
    from .finetune import differences
    from .runstate import CONFIG_FILE, fresh_start
    from .trainconfig import TRAIN_PRESETS, load_train_config, saved_run_config

    if resume and (output / STATE_FILE).is_file() and not (output / CONFIG_FILE).is_file():
        raise InputError(f"cannot resume {output}: its {CONFIG_FILE} (the run's settings) is "
                         f"missing; {fresh_start(output, settings=False)}")
    if resume and (output / CONFIG_FILE).is_file():
        model_cfg, train_cfg = saved_run_config(output / CONFIG_FILE)
        if config is None:
            return model_cfg, train_cfg
        given_model, given_train = load_train_config(config)
        initialised = config in TRAIN_PRESETS and (output / MODEL_FILE).is_file() and \
            "initialised_from" in read_metadata(output / MODEL_FILE)[1]
        if given_model != model_cfg and not initialised:
            differ = differences(given_model, model_cfg, ("--config", "the run"))
            raise InputError(f"--config {config} describes another network than the run in "
                             f"{output} was trained as ({differ}): resume without --config "
                             "(its config.json is kept), or start a new run with --init")
        return model_cfg, given_train
    model_cfg, train_cfg = load_train_config(config)
    if start is not None and (config is None or config in TRAIN_PRESETS):
        # a preset gives its training settings; a file's model section must fit the weights
        model_cfg = start.config
    return model_cfg, train_cfg


def _check_train_options(init: str | None, resume: bool, subject: str | None,
                         lr: float | None, max_minutes: float | None) -> None:
    from .checkpoint import STATE_FILE
    from .hub import AUTHOR_SUFFIXES
    from .trainconfig import MAX_LR

    if init is not None and resume:
        raise InputError("--init starts a new run; --resume continues one: use one of them")
    if init is not None and init.lower().endswith(AUTHOR_SUFFIXES) \
            and Path(init).name != STATE_FILE:
        # train's --config is the training's, so an authors' architecture cannot come with it
        raise InputError(f"--init {init} is an authors' checkpoint: convert it first "
                         f"(monkeyanim convert {init} --config NAME -o start.safetensors) "
                         "and give --init start.safetensors")
    if subject not in SUBJECTS:
        raise InputError(f"--subject must be face or body, not {subject}")
    if lr is not None and not 0 < lr <= MAX_LR:  # NaN fails every comparison
        raise InputError(f"--lr must be positive and at most {MAX_LR:g}, not {lr}")
    if max_minutes is not None and not 0 <= max_minutes < math.inf:
        raise InputError(f"--max-minutes must be 0 or more, not {max_minutes}")


def _report_end(trainer, stop: StopRequest, output: Path) -> None:
    """The run's closing lines (its best held-out L1, then where it stopped; rank 0);
    exit code 130 when Ctrl-C stopped it (143: SIGTERM)."""
    interrupted = stop.exit_code is not None
    best = trainer.keep_best
    if best is not None and best.best_iteration is not None:
        console.print(escape(f"best held-out L1 {best.best:.4f} at iteration "
                             f"{best.best_iteration}: {best.path}"))
    if trainer.rank != 0:
        if interrupted:
            raise typer.Exit(stop.exit_code)
    elif trainer.stopped_early:
        reason = stop.reason or "another process was stopped"
        message = (f"stopped at iteration {trainer.iteration} of {trainer.total} ({reason}), "
                   f"saved in {output}: carry on with --resume")
        if interrupted:
            raise Interrupted(message, stop.exit_code)
        console.print(escape(message))
    else:
        from .checkpoint import MODEL_FILE

        console.print(f"done: {trainer.iteration} iterations in {trainer.elapsed:.0f} s, "
                      f"model at {output / MODEL_FILE}")


def _metrics_table(report: dict, face_model: bool) -> Table:
    """evaluate's report as a table: each metric for the model and the static source."""
    table = Table("metric", "model", "static source", "note", title=escape(report["data"]))
    table.add_row("L1", f"{report['l1']:.4f}", f"{report['static_l1']:.4f}",
                  counted(len(report["videos"]), "video") + (f", {len(report['failed'])} failed"
                                                       if report.get("failed") else ""))
    if report.get("refine_steps"):
        table.add_row("keypoints", f"refined {report['refine_steps']}", "",
                      "steps each, fitted to the frames: not the paper's protocol")
    table.add_row("L1, first frame", f"{report['identity_l1']:.4f}", "0",
                  "rebuilt from itself: appearance error without motion")
    units = {"akd": "pixels", "mkr": "share of frames" if face_model
             else "share of landmarks", "aed": "identity distance"}
    for metric in ("akd", "mkr", "aed"):
        if metric in report:
            static = report.get(f"static_{metric}")
            table.add_row(metric.upper(), f"{report[metric]:.4f}",
                          "" if static is None else f"{static:.4f}",
                          f"{units[metric]} ({report['detector']})")
    if "fid" in report:
        table.add_row("FID", f"{report['fid']:.2f}", "", "Inception pool features, all frames")
    for metric in report["unavailable"]:
        table.add_row(metric.upper(), "unavailable", "", "why: below the table")
    return table


def _unavailable_lines(report: dict) -> list[str]:
    """Why each metric could not be measured, one line per reason (the metrics that share it
    together), unwrapped: a reason may hold a path to copy, which a table cell would cut."""
    metrics_of: dict[str, list[str]] = {}
    for metric, reason in report["unavailable"].items():
        metrics_of.setdefault(reason, []).append(metric.upper())
    return [f"{', '.join(metrics)} unavailable: {reason}" for reason, metrics in metrics_of.items()]


@app.command()
def evaluate(data_dir: Annotated[Path, typer.Argument(help="Folder with test/ (or videos).")],
             checkpoint: CheckpointOpt = None, config: ConfigOpt = None,
             json_path: JsonOpt = None, crop: CropOpt = None, device: DeviceOpt = "auto",
             batch_size: BatchOpt = 8,
             limit: Annotated[int | None, typer.Option(help="Only the first N videos.")] = None,
             fid_weights: FidWeightsOpt = None, refine_keypoints: RefineOpt = 0,
             precision: PrecisionOpt = "fp32", overwrite: OverwriteOpt = False) -> None:
    """Video reconstruction metrics (paper section 4.2) against the static-source baseline."""
    import json

    from .evaluation import evaluate as run
    from .files import atomic_write
    from .faces import parse_crop
    from .video import check_batch_size

    if limit is not None and limit < 1:
        raise InputError("--limit must be at least 1")
    check_batch_size(batch_size)
    check_refine(refine_keypoints)
    box = parse_crop(crop)
    require_all((data_dir, "data folder"), (fid_weights, "FID weights"))
    from .data import evaluation_folder, list_videos

    # an empty or mislaid folder is refused before the model loads
    videos = list_videos(evaluation_folder(data_dir))
    if json_path is not None:
        check_output(json_path, overwrite, inputs=(*videos, fid_weights))
        check_json_name(json_path)
    model = load_checkpoint(checkpoint, config, device, precision)
    # Ctrl-C ends the video under way and reports those measured; a second one stops at once
    with progress_bar(f"evaluating {data_dir.name}", "videos") as progress, \
            StopRequest(None, "interrupted again: stopped at once; no report") as stop:
        # on a terminal a bar; otherwise one parseable line per video
        report = run(model, data_dir, limit, batch_size, box,
                     None if progress else
                     lambda name, v: console.print(escape(f"{name}: L1 {v['l1']:.4f}")),
                     fid_weights, progress, refine_keypoints, stop, precision)
    _print_report(report, bool(model.provenance.get("face_model")))
    if json_path is not None:  # which run this was, so that two reports can be told apart
        run_of = {"checkpoint": checkpoint or model.provenance.get("name"), "limit": limit}
        text = json.dumps(run_of | report, indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
    if report.get("not_run"):
        raise Interrupted(f"{stop.reason}: {len(report['not_run'])} of the videos not run "
                          "(the report holds those measured)", stop.exit_code or 130)
    if report["failed"]:  # measured without them: the exit code says so
        raise typer.Exit(1)


def _print_report(report: dict, face_model: bool) -> None:
    """evaluate's table, the metrics it could not measure and why, and each video's failure
    and warnings."""
    console.print(_metrics_table(report, face_model))
    for line in _unavailable_lines(report):
        console.print(escape(line))
    for name, reason in report["failed"].items():
        err_console.print(f"[bold red]failed:[/] {escape(name)}: {escape(reason)}")
    warn([warning for warnings in report["warnings"].values() for warning in warnings])


def _announce(trainer, data_dir: Path) -> None:
    from .data import videos_beside_splits

    data = trainer.dataset
    if data.skipped:
        err_console.print(escape(f"warning: skipped {len(data.skipped)} video(s) shorter than "
                                 f"2 frames (an image is one frame, unless it is a strip as "
                                 f"wide as a whole number of its height), first: "
                                 f"{data.skipped[0].name}"))
    if loose := videos_beside_splits(data_dir):
        err_console.print(escape(f"warning: {counted(len(loose), 'video')} in {data_dir} beside "
                                 f"its train/ folder left out (move them into train/): "
                                 f"{loose[0].name}" + (", ..." if len(loose) > 1 else "")))
    warn_unreadable(data.unreadable)
    if data.cut_short:
        err_console.print(escape(f"warning: {len(data.cut_short)} video(s) cut short, trained on "
                                 f"as far as they decode; first: {data.cut_short[0]}"))
    passed = [m for m in trainer.milestones if m <= trainer.iteration]
    ahead = [m for m in trainer.milestones if m > trainer.iteration]
    drops = [f"lr dropped at {passed}"] * bool(passed) + [f"lr drops at {ahead}"] * bool(ahead)
    console.print(f"training on {len(data.videos)} videos, {trainer.world} process(es), "
                  f"iterations {trainer.iteration} -> {trainer.total}, "
                  + (", ".join(drops) or "lr drops never"))
    if trainer.keep_best is not None:
        held_out = trainer.keep_best.held_out
        warn_unreadable(held_out.unreadable)
        console.print(f"validating on {len(held_out.names)} held-out videos every "
                      f"{trainer.cfg.validate_every} iterations")


@contextmanager
def _training_view(trainer):
    """A live table of losses and it/s on a TTY; a plain line every log_every iterations,
    and one for the iteration a stop ends on (the iteration it saves)."""
    every = trainer.cfg.log_every

    def line(step, apart: str = " | ") -> str:
        losses = " ".join(f"{k} {v:.4f}" for k, v in step.losses.items())
        held_out = trainer.keep_best and trainer.keep_best.summary()
        return (f"it {step.iteration}/{step.total} {losses} "
                f"{1 / max(step.seconds_per_iteration, 1e-9):.2f} it/s"
                + (f"{apart}{held_out}" if held_out else ""))
    if trainer.rank != 0:
        yield None
        return
    if not console.is_terminal:
        last: list = [None]  # the last step not printed

        def show(step) -> None:
            shown = step.iteration % every == 0 or step.iteration == step.total \
                or step.val_l1 is not None
            last[0] = None if shown else step
            if shown:
                console.print(line(step))
        yield show
        if last[0] is not None:  # a stop (Ctrl-C, --max-minutes) before log_every came
            console.print(line(last[0]))
        return
    from rich.live import Live

    # the held-out L1 on a line of its own: the losses fill an 80-column terminal, and the
    # live view cuts what does not fit
    with Live(console=console, refresh_per_second=4) as live:
        yield lambda step: live.update(line(step, "\n"))
