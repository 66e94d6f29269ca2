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
    done = skip_existing and not batch and all_there(output, json_path)
    check_batch_size(batch_size)
    jobs = _keypoints_outputs(video, batch, output, json_path, output_format, overwrite or done)
    box = parse_crop(crop)
    if done:  # once the input is known to be there: a mistyped one is no success
        return say_skipped(output)
    from .overlay import keypoints_file  # torch: only once the inputs are there

    model = _load(checkpoint, config, device)
    if jobs is not None:  # a folder of videos: one that fails is reported, the others go on
        if skip_existing:  # a drawing there without its JSON (stopped between): the JSON
            jobs = [(v, None if js and all_there(out) else out, js) for v, out, js in jobs]
        batch = [((v.name,), out or js, partial(_keypoints_job, keypoints_file, model, v, out,
                                                js, batch_size, box, overwrite))
                 for v, out, js in jobs]
        _warn_left_out(video, output, json_path)
        jsons = {out: js for _, out, js in jobs if out}  # a video is done once both are there
        skip = (lambda out: all_there(out, jsons.get(out))) if skip_existing else None
        if _failures(_run_batch(batch, ("video",), overwrite, skip=skip)):
            raise typer.Exit(1)
        return
    with _progress(output.name) as progress:
        _report(keypoints_file(model, video, output, json_path, batch_size, box, progress))


def _keypoints_outputs(video: Path, batch: bool, output: Path, json_path: Path | None,
                       output_format: str | None, overwrite: bool) -> list[tuple] | None:
    """Check keypoints' inputs and outputs before the model loads: for a folder of videos
    (``batch``), (video, output, json or None) for each; None for one video or image (a
    folder of frames is one video)."""
    from .folders import require_frames
    from .video import IMAGE_OUTPUTS
    from .videowriter import VIDEO_OUTPUTS

    if not batch:
        require_frames(video)
        _check_single_format(output_format, output)
        check_output(output, overwrite, VIDEO_OUTPUTS + IMAGE_OUTPUTS, inputs=(video,))
        check_json_apart(json_path, output)
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


def _keypoints_job(run, model, video: Path, output: Path, json_path: Path | None,
                   batch_size: int, box, overwrite: bool, progress):
    """One video of a keypoints batch: its JSON, like its drawing, is not replaced without
    --overwrite."""
    if json_path is not None:
        check_output(json_path, overwrite)
    return run(model, video, output, json_path, batch_size, box, progress)
