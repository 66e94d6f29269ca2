"""The keypoints command: the learned keypoints drawn over videos or images, and written as
JSON (registered on cli.app)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from .cli import (BatchOpt, CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FormatOpt, OutputOpt,
                  OverwriteOpt, SkipOpt, _check_no_clash, _failures, _load, _progress, _report,
                  _run_batch, all_there, app, check_existing, say_skipped)
from .cli_animate import (_batch, _batch_suffix, _check_apart, _check_single_format,
                          _holds_videos, _warn_left_out)
from .files import (check_json_apart, check_json_name, check_none_is_input, check_output,
                    output_folder, require)


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
    from .faces import parse_crop
    from .video import check_batch_size

    check_existing(overwrite, skip_existing)
    batch = _holds_videos(video)  # a folder of images alone is one video: its frames
    # --skip-existing: what is there stays as it is; only what is missing is written
    draw, write = (_missing(output, json_path) if skip_existing and not batch
                   else (output, json_path))
    check_batch_size(batch_size)
    jobs = _keypoints_outputs(video, batch, draw, write, output_format, overwrite)
    box = parse_crop(crop)
    if not batch and draw is None and write is None:  # once the input is known to be there
        return say_skipped(output)
    from .overlay import keypoints_file  # torch: only once the inputs are there

    model = _load(checkpoint, config, device)
    if jobs is not None:  # a folder of videos: one that fails is reported, the others go on
        _warn_left_out(video, output, json_path)
        batch_jobs, skip = _batch_jobs(jobs, partial(keypoints_file, model),
                                       (batch_size, box, overwrite), skip_existing)
        if _failures(_run_batch(batch_jobs, ("video",), overwrite, skip=skip)):
            raise typer.Exit(1)
        return
    with _progress((draw or write).name) as progress:
        _report(keypoints_file(model, video, draw, write, batch_size, box, progress))


def _missing(draw: Path | None, write: Path | None) -> tuple[Path | None, Path | None]:
    """The drawing and the JSON, each None where it is there already (or not asked for)."""
    return (None if all_there(draw) else draw), (None if all_there(write) else write)


def _batch_jobs(jobs: list[tuple], run, settings: tuple, skip_existing: bool):
    """A batch's (names, output, run) jobs, and what --skip-existing leaves out: a video
    whose drawing and JSON are there; one with either (a stop came between the two) gets
    the other alone."""
    batch, skipped = [], set()
    for video, out, js in jobs:
        draw, write = _missing(out, js) if skip_existing else (out, js)
        if draw is None and write is None:
            skipped.add(out)
        batch.append(((video.name,), draw or write or out,
                      partial(_keypoints_job, run, video, draw, write, *settings)))
    return batch, skipped.__contains__ if skip_existing else None


def _keypoints_outputs(video: Path, batch: bool, output: Path, json_path: Path | None,
                       output_format: str | None, overwrite: bool) -> list[tuple] | None:
    """Check keypoints' inputs and outputs before the model loads: for a folder of videos
    (``batch``), (video, output, json or None) for each; None for one video or image (a
    folder of frames is one video)."""
    from .folders import require_frames
    from .video import IMAGE_OUTPUTS
    from .videowriter import VIDEO_OUTPUTS

    if not batch:  # (output or json_path None: there already, see _missing)
        require_frames(video)
        if output is not None:
            _check_single_format(output_format, output)
            check_output(output, overwrite, VIDEO_OUTPUTS + IMAGE_OUTPUTS, inputs=(video,))
        check_json_apart(json_path, *[output] * (output is not None))
        if json_path is not None:
            check_output(json_path, overwrite, inputs=(video,))
        check_json_name(json_path)
        require(video, "video or image")
        return None
    videos = _batch(video, "videos")
    _check_apart(output, video)
    if json_path is not None:
        _check_apart(json_path, video)
    suffix, folder = _batch_suffix(output_format), output_folder(output)
    jsons = (output_folder(json_path, "with a folder of videos, --json names a folder for one "
                                      "VIDEO.json each") if json_path is not None else None)
    jobs = [(v, folder / f"{v.stem}{suffix}", jsons / f"{v.stem}.json" if jsons else None)
            for v in videos]
    check_none_is_input([path for _, out, js in jobs for path in (out, js) if path], videos)
    _check_no_clash([((v.name,), out) for v, out, _ in jobs])
    if jsons is not None:
        _check_no_clash([((v.name,), js) for v, _, js in jobs])
    return jobs


def _keypoints_job(run, video: Path, output: Path | None, json_path: Path | None,
                   batch_size: int, box, overwrite: bool, progress):
    """One video of a keypoints batch: its JSON, like its drawing, is not replaced without
    --overwrite."""
    if json_path is not None:
        check_output(json_path, overwrite)
    return run(video, output, json_path, batch_size, box, progress)
