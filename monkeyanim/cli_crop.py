"""The crop command: square face clips cut from videos, ready for `train` (registered on
cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from .cli import OverwriteOpt, _os_error, _progress, app, console, err_console
from .errors import InputError, Interrupted, MonkeyAnimError
from .files import input_files, output_folder


@app.command()
def crop(video: Annotated[Path, typer.Argument(help="Video, or a folder of videos.")],
         output: Annotated[Path, typer.Option("--output", "-o", help="Folder for the clips.")],
         size: Annotated[int, typer.Option(help="Clip side in pixels.")] = 256,
         min_frames: Annotated[int, typer.Option(help="Shortest clip kept.")] = 32,
         overwrite: OverwriteOpt = False) -> None:
    """Cut square face clips ready for `train`, and clips.csv saying what came from where.

    A clip ends at a shot change or where the face track breaks."""
    from .croptool import write_csv
    from .faces import get_detector
    from .video import VIDEO_SUFFIXES

    videos = input_files(video, VIDEO_SUFFIXES, "videos")
    if size < 16 or min_frames < 2:
        raise InputError("--size must be at least 16 and --min-frames at least 2")
    _check_clip_names(videos, output)
    folder = output_folder(output, "-o names the folder for the clips")
    detector = get_detector()
    rows: list[dict] = []
    try:
        failed = _crop_each(videos, folder, detector, (size, min_frames, overwrite), rows,
                            go_on=video.is_dir())
    except BaseException:
        if rows:  # Ctrl-C, or a single video's error: the clips cut so far stay on record
            write_csv(folder / "clips.csv", rows)
        raise
    if not rows and not failed:  # nothing to train on: a failure, and no empty clips.csv
        raise InputError(f"no clip cut from {video}: no face was tracked for {min_frames} "
                         "frames or more (--min-frames)")
    if rows:  # none cut, every video having failed: no empty clips.csv (the folder made goes)
        write_csv(folder / "clips.csv", rows)
        console.print(escape(f"wrote {len(rows)} clip(s) and {folder / 'clips.csv'} "
                             f"(faces found with {detector.name})"))
    if failed:
        console.print(f"{len(videos) - failed} of {len(videos)} videos cropped")
        raise typer.Exit(1)


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
    from .croptool import crop_video

    failed = 0
    for path in videos:
        try:
            with _progress(path.name) as progress:
                found = crop_video(path, folder, detector, *settings, progress=progress)
        except Interrupted:
            raise
        except (MonkeyAnimError, OSError) as caught:  # (a clip's name too long, say)
            exc = caught if isinstance(caught, MonkeyAnimError) else _os_error(caught)
            if not go_on or exc is None:
                raise
            failed += 1
            err_console.print(f"[bold red]failed:[/] {escape(path.name)}: {escape(str(exc))}")
            continue
        frames = sum(r["end_frame"] - r["start_frame"] + 1 for r in found)
        if found or go_on:  # (a lone video without a clip: its error says so, once)
            console.print(escape(f"{path.name}: {len(found)} clip(s), {frames} frames" if found
                                 else f"{path.name}: no clip (no face tracked for {settings[1]} "
                                 "frames or more)"))
        rows.extend(found)
    return failed
