"""The crop command: square face clips cut from videos, ready for `train` (registered on
cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli import (OverwriteOpt, app, check_existing, console, err_console, flag, os_error,
                  progress_bar)
from .errors import InputError, Interrupted, MonkeyAnimError
from .files import input_files, output_folder

MIN_CLIP_PX = 16  # --size: smaller clips hold no face worth training on
CLIPS_CSV = "clips.csv"  # what came from where, in the clips' folder


@app.command()
def crop(video: Annotated[Path, typer.Argument(help="Video, or a folder of videos.")],
         output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the clips.")],
         size: Annotated[int, typer.Option(help="Clip side in pixels.")] = 256,
         min_frames: Annotated[int, typer.Option(help="Shortest clip kept.")] = 32,
         overwrite: OverwriteOpt = False, skip_existing: Annotated[bool, flag(
             "--skip-existing", help="Leave out the videos that clips.csv in OUTPUT says clips "
                                     "were cut from: a rerun finishes a folder that was "
                                     "stopped.")] = False) -> None:
    """Cut square face clips ready for `train`, and clips.csv saying what came from where.

    A clip ends at a shot change or where the face track breaks."""
    from .croptool import read_csv
    from .faces import get_detector
    from .video import VIDEO_SUFFIXES
    from .videowriter import check_side

    check_existing(overwrite, skip_existing)
    videos = input_files(video, VIDEO_SUFFIXES, "videos")
    if size < MIN_CLIP_PX or min_frames < 2:
        raise InputError(f"--size must be at least {MIN_CLIP_PX} and --min-frames at least 2")
    check_side(size)
    _check_clip_names(videos, output)
    folder = output_folder(output, "-o names the folder for the clips")
    asked = len(videos)
    videos = _left_to_crop(videos, folder) if skip_existing else videos
    if not videos:
        return
    read_csv(folder / CLIPS_CSV)  # one that cannot be read: said before any work
    detector = get_detector()
    rows: list[dict] = []  # clips.csv is written after each video that gave clips
    failed = _crop_each(videos, folder, detector, (size, min_frames, overwrite), rows,
                        go_on=video.is_dir())
    if not rows and not failed and len(videos) == asked:  # nothing to train on: a failure,
        # and no empty clips.csv (a lone video's error said why already)
        raise InputError(f"no clip cut from any video in {video}: each one's line above "
                         "says why")
    if rows:
        console.print(escape(f"wrote {len(rows)} clip(s) and {folder / CLIPS_CSV} "
                             f"(faces found with {detector.name})"))
    if failed:
        console.print(f"{len(videos) - failed} of {len(videos)} videos cropped")
        raise typer.Exit(1)


def _left_to_crop(videos: list[Path], folder: Path) -> list[Path]:
    """--skip-existing: the videos that clips.csv in ``folder`` names no clip of (those it
    names are said to be skipped)."""
    from .croptool import cropped_before

    done = cropped_before(folder, videos)
    for path in videos:
        if path in done:
            console.print(escape(f"{path.name}: skipped (clips.csv lists its clips)"))
    return [path for path in videos if path not in done]


def _check_clip_names(videos: list[Path], output: Path) -> None:
    """Clips are named after their video (STEM_000.mp4...): two videos of one stem would
    write the same files, and clips written among the videos could replace one of them."""
    stems = [v.stem for v in videos]
    twin = next((v for v in videos if stems.count(v.stem) > 1), None)
    if twin is not None:
        same = " and ".join(v.name for v in videos if v.stem == twin.stem)
        raise InputError(f"{same} would write clips of the same names ({twin.stem}_000.mp4...): "
                         "rename one")
    if output.exists() and any(v.parent.resolve() == output.resolve() for v in videos):
        raise InputError(f"-o {output} is the folder of the videos themselves: clips written "
                         "there could replace them; name another folder")


def _crop_each(videos: list[Path], folder: Path, detector, settings: tuple, rows: list[dict],
               go_on: bool) -> int:
    """Crop every video into folder, adding each clip's row to rows; with go_on a video that
    fails is reported and the others go on. Returns how many failed."""
    from .croptool import crop_video, write_csv

    failed = 0
    for path in videos:
        try:
            with progress_bar(path.name) as progress:
                found, length = crop_video(path, folder, detector, *settings,
                                           progress=progress)
        except Interrupted:
            raise
        except (MonkeyAnimError, OSError) as caught:  # (a clip's name too long, say)
            exc = caught if isinstance(caught, MonkeyAnimError) else os_error(caught)
            if not go_on or exc is None:
                raise
            failed += 1
            err_console.print(f"[bold red]failed:[/] {escape(path.name)}: {escape(str(exc))}")
            continue
        frames = sum(r["end_frame"] - r["start_frame"] + 1 for r in found)
        why = (f"it has {length} frame{'s' * (length != 1)}, fewer than --min-frames "
               f"{settings[1]}" if length < settings[1] else
               f"no face tracked for {settings[1]} frames or more")
        if not found and not go_on:  # a lone video: an error
            raise InputError(f"no clip cut from {path}: {why}")
        console.print(escape(f"{path.name}: {len(found)} clip(s), {frames} frames" if found
                             else f"{path.name}: no clip ({why})"))
        rows.extend(found)
        if found:  # on record at once: a kill later loses no row of the clips cut
            write_csv(folder / CLIPS_CSV, rows)
    return failed
