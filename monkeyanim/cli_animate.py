"""The main commands: animate an image, reconstruct a video, draw keypoints (registered on
cli.app)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Annotated

import typer

from .cli import (BatchOpt, CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FormatOpt, JsonOpt,
                  OutputOpt, OverwriteOpt, PrecisionOpt, RefineOpt, Skipped, SkipOpt, all_there,
                  app, check_existing, check_refine, console, count_failures, counted, flag,
                  load_checkpoint, progress_bar, report_result, run_batch, say_skipped, warn)
from .errors import InputError, Interrupted
from .files import check_json_apart, check_json_name, check_output


@app.command()
def animate(source: Annotated[Path, typer.Argument(
                help="Image (of a video or frame strip: its first frame), or a folder of "
                     "images.")],
            driving: Annotated[Path, typer.Argument(help="Video, animated WebP/PNG, frame strip "
                                                         "or folder of frames; or a folder of "
                                                         "videos.")],
            output: OutputOpt,
            checkpoint: CheckpointOpt = None, config: ConfigOpt = None,
            mode: Annotated[str | None, typer.Option(
                help="relative (paper Eq. 7) or absolute; default: the checkpoint's.")] = None,
            adapt_scale: Annotated[bool, flag(
                "--adapt-scale", help="Scale motion by the keypoint hulls' size ratio.")] = False,
            find_best_frame: Annotated[bool, flag(
                "--find-best-frame",
                help="Align to the driving frame whose pose is closest to the source.")] = False,
            side_by_side: Annotated[bool, flag(
                "--side-by-side", help="Write driving | source | result.")] = False,
            fps: Annotated[float | None, typer.Option(
                help="Output frame rate, 0.01 to 1000 (default: the driving video's; another "
                     "drops the sound).")] = None,
            size: Annotated[int | None, typer.Option(help=(
                "Output side in pixels; default: the checkpoint's frame size (`monkeyanim "
                "checkpoints` lists it). H.264 needs even sides: an odd one gains a repeated "
                "last row and column in mp4, mov and mkv."))] = None,
            crop: CropOpt = None,
            driving_crop: Annotated[str | None, typer.Option(
                help="The driving video's crop where it differs from the source's: auto, none "
                     "or x,y,w,h in the video's pixels; default: --crop's.")] = None,
            paste_back: Annotated[bool, flag(
                "--paste-back", help="Blend the result into the full-size source image.")] = False,
            device: DeviceOpt = "auto", batch_size: BatchOpt = 8,
            precision: PrecisionOpt = "fp32", refine_keypoints: RefineOpt = 0,
            output_format: FormatOpt = None, overwrite: OverwriteOpt = False,
            skip_existing: SkipOpt = False) -> None:
    """Animate SOURCE with the motion of DRIVING into OUTPUT (a video, a gif or a WebP)."""
    from .batches import is_batch, plan_animate
    from .faces import parse_crop
    from .video import check_batch_size
    from .videowriter import check_output_options

    check_existing(overwrite, skip_existing)
    batch_driving = is_batch(driving)  # a folder of videos (a folder of images: frames)
    done = skip_existing and not (source.is_dir() or batch_driving) and all_there(output)
    check_output_options(fps, size, paste_back, side_by_side)
    check_batch_size(batch_size)
    check_refine(refine_keypoints)
    box = parse_crop(crop)
    plan = plan_animate(source, driving, batch_driving, output, output_format,
                        overwrite or done)
    if done:  # once the inputs are known to be there: a mistyped one is no success
        return say_skipped(output)
    from .jobs import AnimateSettings, animate_file  # torch: only once the inputs are there
    from .pipeline import check_mode

    if mode is not None:  # before the model loads, and before a batch fails pair by pair
        check_mode(mode)
    settings = AnimateSettings(mode, adapt_scale, find_best_frame, side_by_side, fps, size,
                               batch_size, precision, box, paste_back, refine_keypoints,
                               driving_crop)
    model = load_checkpoint(checkpoint, config, device, precision)
    settings.transfer(model)  # once, not for each pair of a batch
    if plan is not None:
        jobs = [((s.name, d.name), out, partial(animate_file, model, s, d, out, settings))
                for (s, d), (out,) in plan.jobs]
        warn(plan.warnings)
        if count_failures(run_batch(jobs, ("source", "driving"), overwrite,
                                    skip=all_there if skip_existing else None)):
            raise typer.Exit(1)
        return
    with progress_bar(output.name) as progress:
        report_result(animate_file(model, source, driving, output, settings, progress))


@app.command()
def reconstruct(video: Annotated[Path, typer.Argument(help="Video, or a folder of videos.")],
                output: OutputOpt,
                checkpoint: CheckpointOpt = None, config: ConfigOpt = None,
                json_path: JsonOpt = None,
                crop: CropOpt = None, device: DeviceOpt = "auto", batch_size: BatchOpt = 8,
                precision: PrecisionOpt = "fp32", refine_keypoints: RefineOpt = 0,
                output_format: FormatOpt = None, overwrite: OverwriteOpt = False,
                skip_existing: SkipOpt = False) -> None:
    """Reconstruct videos from their first frame and each frame's keypoints; print L1."""
    from .batches import is_batch, plan_reconstruct
    from .faces import parse_crop
    from .video import check_batch_size

    check_existing(overwrite, skip_existing)
    batch = is_batch(video)  # a folder of images alone is one video: its frames
    done = skip_existing and not batch and all_there(output, json_path)
    check_batch_size(batch_size)
    check_refine(refine_keypoints)
    box = parse_crop(crop)
    plan = plan_reconstruct(video, batch, output, output_format, overwrite or done)
    videos, outputs = [v for (v,), _ in plan.jobs], [out for _, (out,) in plan.jobs]
    check_json_apart(json_path, *outputs)
    if json_path is not None:
        _check_new_json(json_path, skip_existing and not done)
        check_output(json_path, overwrite or done, inputs=tuple(videos))
    check_json_name(json_path)
    if done:  # once the input is known to be there: a mistyped one is no success
        return say_skipped(output)
    from .jobs import reconstruct_file  # torch: only once the inputs are there

    model = load_checkpoint(checkpoint, config, device, precision)
    jobs = [((v.name,), out, partial(reconstruct_file, model, v, out, batch_size, precision, box,
                                     refine_keypoints))
            for v, out in zip(videos, outputs)]
    results: list = []
    run = {"checkpoint": checkpoint or model.provenance.get("name"),
           "refine_steps": refine_keypoints, "precision": precision}
    if batch:  # a video that fails is reported and the others go on
        warn(plan.warnings)
        try:
            run_batch(jobs, ("video",), overwrite, results,
                       skip=all_there if skip_existing else None)
        except Interrupted:  # the numbers of the videos done are kept
            _sum_up_reconstructions(videos, results, json_path, run)
            raise
    else:
        with progress_bar(output.name) as progress:
            results.append(jobs[0][2](progress))
        report_result(results[0])
    _sum_up_reconstructions(videos, results, json_path, run)
    if count_failures(results):
        raise typer.Exit(1)


def _check_new_json(json_path: Path, skip_existing: bool) -> None:
    """With --skip-existing, the --json of this run's numbers (those of the videos not
    skipped) is a new file: the one there holds an earlier run's, and stays."""
    if skip_existing and json_path.exists():
        raise InputError(f"--json {json_path} is already there: with --skip-existing this run "
                         "measures only the videos it does not skip; name another file for "
                         "their numbers")


def _sum_up_reconstructions(videos: list[Path], results: list, json_path: Path | None,
                            run: dict) -> None:
    """The mean L1 over the videos that worked, and the --json
    (evaluation.reconstruction_report)."""
    import json

    from .evaluation import reconstruction_report
    from .files import atomic_write

    done = {v.name: r for v, r in zip(videos, results) if not isinstance(r, (str, Skipped))}
    report = reconstruction_report(
        run, done, {v.name: r for v, r in zip(videos, results) if isinstance(r, str)},
        [v.name for v, r in zip(videos, results) if isinstance(r, Skipped)],
        [v.name for v in videos[len(results):]])  # those after a stop
    if done:
        console.print(f"mean L1 {report['mean_l1']:.4f} over {counted(len(done), 'video')}")
    if json_path is not None:
        text = json.dumps(report, indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
