"""The keypoints command: the learned keypoints drawn over videos or images, and written as
JSON (registered on cli.app)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from .cli import (BatchOpt, CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FormatOpt, OutputOpt,
                  OverwriteOpt, SkipOpt, all_there, app, check_existing, count_failures,
                  load_checkpoint, progress_bar, report_result, run_batch, say_skipped, warn)
from .files import check_output


@app.command()
def keypoints(video: Annotated[Path, typer.Argument(help="Video or image, or a folder of "
                                                         "videos.")],
              output: OutputOpt,
              checkpoint: CheckpointOpt = None, config: ConfigOpt = None,
              json_path: Annotated[Path | None, typer.Option(
                  "--json", help="Also write each frame's keypoints as JSON here (with a "
                                 "folder of videos: a folder, one VIDEO.json each).")] = None,
              crop: CropOpt = None, device: DeviceOpt = "auto", batch_size: BatchOpt = 8,
              output_format: FormatOpt = None, overwrite: OverwriteOpt = False,
              skip_existing: SkipOpt = False) -> None:
    """Draw the learned keypoints over a video or an image (into a .png: its first frame)."""
    from .batches import is_batch, plan_keypoints
    from .faces import parse_crop
    from .video import check_batch_size

    check_existing(overwrite, skip_existing)
    batch = is_batch(video)  # a folder of images alone is one video: its frames
    # --skip-existing: what is there stays as it is; only what is missing is written
    draw, write = (_missing(output, json_path) if skip_existing and not batch
                   else (output, json_path))
    check_batch_size(batch_size)
    plan = plan_keypoints(video, batch, draw, write, output_format, overwrite)
    box = parse_crop(crop)
    if not batch and draw is None and write is None:  # once the input is known to be there
        return say_skipped(output)
    from .overlay import keypoints_file  # torch: only once the inputs are there

    model = load_checkpoint(checkpoint, config, device)
    if plan is not None:  # a folder of videos: one that fails is reported, the others go on
        warn(plan.warnings)
        batch_jobs, skip = _batch_jobs(plan.jobs, partial(keypoints_file, model),
                                       (batch_size, box, overwrite), skip_existing)
        if count_failures(run_batch(batch_jobs, ("video",), overwrite, skip=skip)):
            raise typer.Exit(1)
        return
    with progress_bar((draw or write).name) as progress:
        report_result(keypoints_file(model, video, draw, write, batch_size, box, progress))


def _missing(draw: Path | None, write: Path | None) -> tuple[Path | None, Path | None]:
    """The drawing and the JSON, each None where it is there already (or not asked for)."""
    return (None if all_there(draw) else draw), (None if all_there(write) else write)


def _batch_jobs(jobs: list[tuple], run, settings: tuple, skip_existing: bool):
    """A batch's (names, output, run) jobs, and what --skip-existing leaves out: a video
    whose drawing and JSON are there; one with either (a stop came between the two) gets
    the other alone."""
    batch, skipped = [], set()
    for (video,), (out, js) in jobs:
        draw, write = _missing(out, js) if skip_existing else (out, js)
        if draw is None and write is None:
            skipped.add(out)
        batch.append(((video.name,), draw or write or out,
                      partial(_keypoints_job, run, video, draw, write, *settings)))
    return batch, skipped.__contains__ if skip_existing else None


def _keypoints_job(run, video: Path, output: Path | None, json_path: Path | None,
                   batch_size: int, box, overwrite: bool, progress):
    """One video of a keypoints batch: its JSON, like its drawing, is not replaced without
    --overwrite."""
    if json_path is not None:
        check_output(json_path, overwrite)
    return run(video, output, json_path, batch_size, box, progress)
