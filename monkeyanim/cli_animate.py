"""The main commands: animate an image, reconstruct a video, draw keypoints (registered on
cli.app)."""

from __future__ import annotations

from functools import lru_cache, partial
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli import (BatchOpt, CheckpointOpt, ConfigOpt, CropOpt, DeviceOpt, FormatOpt, JsonOpt,
                  OutputOpt, OverwriteOpt, PrecisionOpt, RefineOpt, Skipped, SkipOpt,
                  _check_refine, _failures, _check_no_clash, _load, _progress, _report,
                  _run_batch, all_there, app, check_existing, flag, console, counted, err_console,
                  say_skipped)
from .errors import InputError, Interrupted
from .files import (check_json_apart, check_json_name, check_none_is_input, check_output,
                    input_files, output_folder, require)


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
    from .faces import parse_crop
    from .video import check_batch_size

    from .videowriter import check_output_options

    check_existing(overwrite, skip_existing)
    batch_driving = _holds_videos(driving)  # a folder of videos (a folder of images: frames)
    done = skip_existing and not (source.is_dir() or batch_driving) and all_there(output)
    check_output_options(fps, size, paste_back, side_by_side)
    check_batch_size(batch_size)
    _check_refine(refine_keypoints)
    box = parse_crop(crop)
    pairs = _animate_pairs(source, driving, batch_driving, output, output_format,
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
    model = _load(checkpoint, config, device, precision)
    settings.transfer(model)  # once, not for each pair of a batch
    if pairs is not None:
        jobs = [((s.name, d.name), out, partial(animate_file, model, s, d, out, settings))
                for s, d, out in pairs]
        if batch_driving:
            _warn_left_out(driving, output)
        _warn_videos_left_out(source)
        if _failures(_run_batch(jobs, ("source", "driving"), overwrite,
                                skip=all_there if skip_existing else None)):
            raise typer.Exit(1)
        return
    with _progress(output.name) as progress:
        _report(animate_file(model, source, driving, output, settings, progress))


def _animate_pairs(source: Path, driving: Path, batch_driving: bool, output: Path,
                   output_format: str | None, overwrite: bool
                   ) -> list[tuple[Path, Path, Path]] | None:
    """A batch's (source, driving, output) triples, checked; None for one pair (its inputs
    and OUTPUT checked). A folder of images is one driving video (its frames); a folder of
    videos (``batch_driving``) is a batch, and so is a folder of sources."""
    from .folders import require_frames
    from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES
    from .videowriter import VIDEO_OUTPUTS

    require_frames(driving, "driving video")
    if not source.is_dir() and not batch_driving:
        _check_single_format(output_format, output)
        check_output(output, overwrite, VIDEO_OUTPUTS, inputs=(source, driving))
        input_files(source, IMAGE_SUFFIXES | VIDEO_SUFFIXES, "source images")
        require(driving, "video")
        return None
    sources = input_files(source, IMAGE_SUFFIXES, "source images")
    drivings = _batch(driving, "driving videos") if batch_driving else [driving]
    _check_apart(output, source, driving)
    suffix, folder = _batch_suffix(output_format), output_folder(output)
    pairs = [(s, d, folder / f"{s.stem}__{d.stem}{suffix}") for s in sources for d in drivings]
    check_none_is_input([out for _, _, out in pairs], [*sources, *drivings])
    _check_no_clash([((s.name, d.name), out) for s, d, out in pairs])
    return pairs


def _check_apart(output: Path, *inputs: Path) -> None:
    """A batch's output folder may not be a folder of its inputs: the next run would read
    the results as inputs too."""
    for folder in inputs:
        if folder.is_dir() and output.resolve() == folder.resolve():
            raise InputError(f"-o {output} is the folder of the inputs ({folder}): results "
                             "written there would be read as inputs next time; name another "
                             "folder")


def _warn_videos_left_out(folder: Path) -> None:
    """A folder of sources takes images; a video there (whose first frame a lone SOURCE
    video would give) is left out, and the user told."""
    from .video import VIDEO_SUFFIXES

    if folder.is_dir():
        videos = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if videos:
            err_console.print(escape(
                f"warning: {counted(len(videos), 'video')} in {folder} left out: a folder of "
                f"sources takes images (a video given as SOURCE alone gives its first "
                f"frame): {videos[0]}" + (", ..." if len(videos) > 1 else "")))


def _holds_videos(path: Path) -> bool:
    """Whether ``path`` is a folder of videos or frame strips (a batch); a folder of other
    images alone is the frames of one video."""
    from .folders import holds_videos

    return holds_videos(path)


@lru_cache(maxsize=4)
def _scan(folder: Path) -> tuple[list[Path], list[Path]]:
    """folders.batch_videos, once per folder and command: telling strips from other images
    reads each image's header."""
    from .folders import batch_videos

    return batch_videos(folder)


def _batch(folder: Path, what: str) -> list[Path]:
    """A batch folder's videos and frame strips (other images: see _warn_left_out), as the
    folder holds them now (a command run in-process again scans it again)."""
    _scan.cache_clear()
    videos, _ = _scan(folder)
    if not videos:
        raise InputError(f"folder {folder} holds no {what}")
    return videos


def _warn_left_out(folder: Path, *written: Path | None) -> None:
    """Once the batch is sure to run: the images in its folder of videos that are neither
    videos nor frame strips, and its folders (but those it writes to), and so are left out.
    (Not for a folder of frames, one driving video, which leaves nothing out.)"""
    _, others = _scan(folder)
    if others:
        err_console.print(escape(f"warning: {counted(len(others), 'image')} in {folder} left "
                                 f"out, neither videos nor frame strips: {others[0].name}"
                                 + (", ..." if len(others) > 1 else "")))
    outputs = {path.resolve() for path in written if path is not None}
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir()
                     and not p.name.startswith(".") and p.resolve() not in outputs)
    if folders:  # (evaluate and train read a folder of frames there as a video)
        err_console.print(escape(f"warning: {counted(len(folders), 'folder')} in {folder} left "
                                 f"out (a batch reads the videos in it; give a folder of frames "
                                 f"as a video of its own): {folders[0]}"
                                 + (", ..." if len(folders) > 1 else "")))


def _batch_suffix(output_format: str | None) -> str:
    """The suffix of a batch's outputs: --format's, mp4 by default."""
    from .videowriter import VIDEO_OUTPUTS

    suffix = "." + (output_format or "mp4").lower().lstrip(".")
    if suffix not in VIDEO_OUTPUTS:
        names = ", ".join(s.lstrip(".") for s in VIDEO_OUTPUTS)
        raise InputError(f"--format must be one of {names}, not {output_format!r}")
    return suffix


def _check_single_format(output_format: str | None, output: Path) -> None:
    """--format is for folders of outputs; one file's suffix says its format, and a --format
    that contradicts it is a slip worth naming."""
    if output_format is not None and _batch_suffix(output_format) != output.suffix.lower():
        raise InputError(f"--format {output_format} names the format of a folder's outputs; "
                         f"one output file takes its format from its suffix ({output.name})")


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
    from .faces import parse_crop
    from .video import check_batch_size

    check_existing(overwrite, skip_existing)
    batch = _holds_videos(video)  # a folder of images alone is one video: its frames
    done = skip_existing and not batch and all_there(output, json_path)
    check_batch_size(batch_size)
    _check_refine(refine_keypoints)
    box = parse_crop(crop)
    videos, outputs = _reconstruct_outputs(video, output, output_format, overwrite or done,
                                           batch)
    check_json_apart(json_path, *outputs)
    if json_path is not None:
        _check_new_json(json_path, skip_existing and not done)
        check_output(json_path, overwrite or done, inputs=tuple(videos))
    check_json_name(json_path)
    if done:  # once the input is known to be there: a mistyped one is no success
        return say_skipped(output)
    from .jobs import reconstruct_file  # torch: only once the inputs are there

    model = _load(checkpoint, config, device, precision)
    jobs = [((v.name,), out, partial(reconstruct_file, model, v, out, batch_size, precision, box,
                                     refine_keypoints))
            for v, out in zip(videos, outputs)]
    results: list = []
    run = {"checkpoint": checkpoint or model.provenance.get("name"),
           "refine_steps": refine_keypoints, "precision": precision}
    if batch:  # a video that fails is reported and the others go on
        _warn_left_out(video, output)
        try:
            _run_batch(jobs, ("video",), overwrite, results,
                       skip=all_there if skip_existing else None)
        except Interrupted:  # the numbers of the videos done are kept
            _sum_up_reconstructions(videos, results, json_path, run)
            raise
    else:
        with _progress(output.name) as progress:
            results.append(jobs[0][2](progress))
        _report(results[0])
    _sum_up_reconstructions(videos, results, json_path, run)
    if _failures(results):
        raise typer.Exit(1)


def _check_new_json(json_path: Path, skip_existing: bool) -> None:
    """With --skip-existing, the --json of this run's numbers (those of the videos not
    skipped) is a new file: the one there holds an earlier run's, and stays."""
    if skip_existing and json_path.exists():
        raise InputError(f"--json {json_path} is already there: with --skip-existing this run "
                         "measures only the videos it does not skip; name another file for "
                         "their numbers")


def _reconstruct_outputs(video: Path, output: Path, output_format: str | None,
                         overwrite: bool, batch: bool) -> tuple[list[Path], list[Path]]:
    """reconstruct's videos and their outputs, checked before the model loads: a batch's
    each into the folder OUTPUT, else one into the file OUTPUT."""
    from .folders import require_frames
    from .videowriter import VIDEO_OUTPUTS

    if not batch:
        require(video, "video")
        require_frames(video)
        _check_single_format(output_format, output)
        return [video], [check_output(output, overwrite, VIDEO_OUTPUTS, inputs=(video,))]
    videos = _batch(video, "videos")
    _check_apart(output, video)
    suffix, folder = _batch_suffix(output_format), output_folder(output)
    outputs = [folder / f"{v.stem}{suffix}" for v in videos]
    check_none_is_input(outputs, videos)
    _check_no_clash([((v.name,), out) for v, out in zip(videos, outputs)])
    return videos, outputs


def _sum_up_reconstructions(videos: list[Path], results: list, json_path: Path | None,
                            run: dict) -> None:
    """The mean L1 over the videos that worked, and the --json: ``run`` (which checkpoint,
    refinement and precision: they change the numbers), each video's L1, the means
    (over videos, each video's own a mean over its frames), each video's frames, baselines
    and crop detector, the failures (a reason each) and the warnings of those that worked."""
    import json

    from .files import atomic_write

    done = {v.name: r for v, r in zip(videos, results) if not isinstance(r, (str, Skipped))}
    skipped = [v.name for v, r in zip(videos, results) if isinstance(r, Skipped)]
    not_run = [v.name for v in videos[len(results):]]  # after a stop
    scores = {name: r.extra["l1"] for name, r in done.items()}
    mean = (lambda key: sum(r.extra[key] for r in done.values()) / len(done)) if done else None
    if mean is not None:
        console.print(f"mean L1 {mean('l1'):.4f} over {counted(len(done), 'video')}")
    if json_path is not None:
        failed = {v.name: r for v, r in zip(videos, results) if isinstance(r, str)}
        details = {name: {"frames": r.frames, "crop_detector": r.extra.get("detector")}
                   | {key: r.extra[key] for key in ("l1", "static_l1", "identity_l1")}
                   for name, r in done.items()}
        means = {f"mean_{key}": mean(key) if mean else None
                 for key in ("l1", "static_l1", "identity_l1")}
        warnings = {name: r.warnings for name, r in done.items() if r.warnings}
        text = json.dumps(run | {"videos": scores, **means, "details": details,
                                 "failed": failed, "warnings": warnings}
                          | ({"skipped": skipped} if skipped else {})
                          | ({"not_run": not_run} if not_run else {}), indent=2)
        atomic_write(json_path, lambda tmp: tmp.write_text(text))
