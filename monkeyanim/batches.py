"""The jobs of a command given folders: which inputs pair with which outputs, checked
before any model loads, and what a folder holds that the batch leaves out (said as
warnings for the command line to print once the batch is sure to run)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import InputError
from .files import (check_json_apart, check_json_name, check_none_is_input, check_output,
                    input_files, output_folder, require)
from .folders import batch_videos, holds_videos, require_frames
from .images import IMAGE_SUFFIXES
from .video import IMAGE_OUTPUTS, VIDEO_SUFFIXES
from .videowriter import VIDEO_OUTPUTS

DEFAULT_SUFFIX = ".mp4"  # a batch's outputs without --format


@dataclass
class Plan:
    """A batch's jobs, each ``(inputs, outputs)`` (the keypoints command's outputs: the
    drawing and the JSON or None), and what its folders hold that it leaves out, as
    warnings."""

    jobs: list[tuple[tuple[Path, ...], tuple[Path | None, ...]]]
    warnings: list[str] = field(default_factory=list)


def is_batch(path: Path) -> bool:
    """Whether ``path`` is a folder of videos or frame strips (a batch); a folder of other
    images alone is the frames of one video."""
    return holds_videos(path)


def _listed(paths: list[str]) -> str:
    """The first of ``paths``, and ', ...' where there are more."""
    return paths[0] + (", ..." if len(paths) > 1 else "")


def _counted(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def scan(folder: Path, what: str, *written: Path | None) -> tuple[list[Path], list[str]]:
    """A batch folder's videos and frame strips, and warnings for what it leaves out: the
    other images, and its folders but those the batch writes to (``written``). InputError
    when it holds no ``what``."""
    videos, others = batch_videos(folder)
    if not videos:
        raise InputError(f"folder {folder} holds no {what}")
    warnings = [f"{_counted(len(others), 'image')} in {folder} left out, neither videos nor "
                f"frame strips: {_listed([p.name for p in others])}"] if others else []
    outputs = {path.resolve() for path in written if path is not None}
    folders = sorted(p.name for p in folder.iterdir() if p.is_dir()
                     and not p.name.startswith(".") and p.resolve() not in outputs)
    if folders:  # (evaluate and train read a folder of frames there as a video)
        warnings.append(f"{_counted(len(folders), 'folder')} in {folder} left out (a batch "
                        f"reads the videos in it; give a folder of frames as a video of its "
                        f"own): {_listed(folders)}")
    return videos, warnings


def _videos_left_out(folder: Path) -> list[str]:
    """A folder of sources takes images; a warning for the videos there (whose first frame
    a lone SOURCE video would give)."""
    if not folder.is_dir():
        return []
    videos = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    return [f"{_counted(len(videos), 'video')} in {folder} left out: a folder of sources "
            f"takes images (a video given as SOURCE alone gives its first frame): "
            f"{_listed(videos)}"] if videos else []


def check_apart(output: Path, *inputs: Path) -> None:
    """A batch's output folder may not be a folder of its inputs: the next run would read
    the results as inputs too."""
    for folder in inputs:
        if folder.is_dir() and output.resolve() == folder.resolve():
            raise InputError(f"-o {output} is the folder of the inputs ({folder}): results "
                             "written there would be read as inputs next time; name another "
                             "folder")


def check_no_clash(named: list[tuple[tuple[str, ...], Path]]) -> None:
    """InputError when two jobs, (input names, output), would write the same file: checked
    before any work (and so before the model loads)."""
    outputs = [out for _, out in named]
    clash = next((out for out in outputs if outputs.count(out) > 1), None)
    if clash is not None:
        inputs = [" + ".join(names) for names, out in named if out == clash]
        raise InputError(f"{' and '.join(inputs)} would be written to the same file {clash}: "
                         "rename one")


def batch_suffix(output_format: str | None) -> str:
    """The suffix of a batch's outputs: --format's, mp4 by default."""
    suffix = "." + (output_format or DEFAULT_SUFFIX).lower().lstrip(".")
    if suffix not in VIDEO_OUTPUTS:
        names = ", ".join(s.lstrip(".") for s in VIDEO_OUTPUTS)
        raise InputError(f"--format must be one of {names}, not {output_format!r}")
    return suffix


def check_single_format(output_format: str | None, output: Path) -> None:
    """--format is for folders of outputs; one file's suffix says its format, and a --format
    that contradicts it is a slip worth naming."""
    if output_format is not None and batch_suffix(output_format) != output.suffix.lower():
        raise InputError(f"--format {output_format} names the format of a folder's outputs; "
                         f"one output file takes its format from its suffix ({output.name})")


def _outputs(videos: list[Path], output: Path, output_format: str | None) -> list[Path]:
    """Each video's output in the folder ``output``, named after it."""
    suffix, folder = batch_suffix(output_format), output_folder(output)
    return [folder / f"{v.stem}{suffix}" for v in videos]


def plan_animate(source: Path, driving: Path, batch_driving: bool, output: Path,
                 output_format: str | None, overwrite: bool) -> Plan | None:
    """animate's (source, driving) -> output jobs, checked; None for one pair (its inputs
    and ``output`` checked). A folder of images is one driving video (its frames); a folder
    of videos (``batch_driving``, see is_batch) is a batch, and so is a folder of sources."""
    require_frames(driving, "driving video")
    if not source.is_dir() and not batch_driving:
        check_single_format(output_format, output)
        check_output(output, overwrite, VIDEO_OUTPUTS, inputs=(source, driving))
        input_files(source, IMAGE_SUFFIXES | VIDEO_SUFFIXES, "source images")
        require(driving, "video")
        return None
    sources = input_files(source, IMAGE_SUFFIXES, "source images")
    drivings, warnings = (scan(driving, "driving videos", output) if batch_driving
                          else ([driving], []))
    check_apart(output, source, driving)
    suffix, folder = batch_suffix(output_format), output_folder(output)
    jobs = [((s, d), (folder / f"{s.stem}__{d.stem}{suffix}",))
            for s in sources for d in drivings]
    check_none_is_input([out for _, (out,) in jobs], [*sources, *drivings])
    check_no_clash([((s.name, d.name), out) for (s, d), (out,) in jobs])
    return Plan(jobs, warnings + _videos_left_out(source))


def plan_reconstruct(video: Path, batch: bool, output: Path, output_format: str | None,
                     overwrite: bool) -> Plan:
    """reconstruct's video -> output jobs, checked before the model loads: a batch's
    (``batch``, see is_batch) each into the folder ``output``, else one into the file
    ``output``."""
    if not batch:
        require(video, "video")
        require_frames(video)
        check_single_format(output_format, output)
        return Plan([((video,), (check_output(output, overwrite, VIDEO_OUTPUTS,
                                              inputs=(video,)),))])
    videos, warnings = scan(video, "videos", output)
    check_apart(output, video)
    outputs = _outputs(videos, output, output_format)
    check_none_is_input(outputs, videos)
    check_no_clash([((v.name,), out) for v, out in zip(videos, outputs)])
    return Plan([((v,), (out,)) for v, out in zip(videos, outputs)], warnings)


def plan_keypoints(video: Path, batch: bool, draw: Path | None, json_path: Path | None,
                   output_format: str | None, overwrite: bool) -> Plan | None:
    """keypoints' video -> (drawing, JSON or None) jobs, checked before the model loads,
    for a folder of videos (``batch``, see is_batch); None for one video or image (a folder
    of frames is one video), ``draw`` and ``json_path`` checked (either None: there
    already, or not asked for)."""
    if not batch:
        require_frames(video)
        if draw is not None:
            check_single_format(output_format, draw)
            check_output(draw, overwrite, VIDEO_OUTPUTS + IMAGE_OUTPUTS, inputs=(video,))
        check_json_apart(json_path, *[draw] * (draw is not None))
        if json_path is not None:
            check_output(json_path, overwrite, inputs=(video,))
        check_json_name(json_path)
        require(video, "video or image")
        return None
    videos, warnings = scan(video, "videos", draw, json_path)
    check_apart(draw, video)
    if json_path is not None:
        check_apart(json_path, video)
    outputs = _outputs(videos, draw, output_format)
    jsons = (output_folder(json_path, "with a folder of videos, --json names a folder for one "
                                      "VIDEO.json each") if json_path is not None else None)
    jobs = [((v,), (out, jsons / f"{v.stem}.json" if jsons else None))
            for v, out in zip(videos, outputs)]
    check_none_is_input([p for _, outs in jobs for p in outs if p], videos)
    check_no_clash([((v.name,), out) for (v,), (out, _) in jobs])
    if jsons is not None:
        check_no_clash([((v.name,), js) for (v,), (_, js) in jobs])
    return Plan(jobs, warnings)
