"""What a folder given as an input holds: a batch of videos (videos, animated images, frame
strips) or the frames of one video; checked before any model loads."""

from __future__ import annotations

from pathlib import Path

from .errors import InputError
from .images import BATCH_STRIP_MIN_FRAMES, IMAGE_SUFFIXES, image_is_strip, is_animated
from .video import VIDEO_SUFFIXES, frame_files

# images whose headers tell whether a folder of images is a batch (spread over it: a frame
# folder of thousands is not read whole)
PROBED_IMAGES = 16


def holds_videos(folder: Path) -> bool:
    """Whether ``folder`` is a batch: it holds videos, or its images are frame strips (the
    authors' datasets) or animations; a folder of other images alone is the frames of one
    video."""
    if not folder.is_dir():
        return False
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files):
        return True
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    # not the first image alone: a 2-frame strip (MGif's test 00019.png) or a still (a
    # thumbnail) may sort before the strips
    step = max(1, len(images) // PROBED_IMAGES)
    return any(_image_is_video(p) for p in [*images[::step], *images[-1:]])


def _image_is_video(path: Path, min_frames: int = BATCH_STRIP_MIN_FRAMES) -> bool:
    """An animated WebP or PNG (the project's own --format webp outputs) or a frame strip
    of at least ``min_frames`` frames."""
    return is_animated(path) or image_is_strip(path, min_frames)


def batch_videos(folder: Path) -> tuple[list[Path], list[Path]]:
    """A batch folder's videos, animated images and frame strips, sorted, and the other
    images it holds (which are not videos of their own). In a folder of strips (no video
    files: the authors' splits) a strip of 2 frames is a video, as evaluate and train read
    it; among video files, a 2:1 or 3:1 image is rather a poster or a thumbnail."""
    files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    shortest = (BATCH_STRIP_MIN_FRAMES if any(p.suffix.lower() in VIDEO_SUFFIXES for p in files)
                else 2)
    moving = {p for p in images if _image_is_video(p, shortest)}
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES or p in moving]
    return videos, [p for p in images if p not in moving]


def require_frames(path: Path, what: str = "video") -> None:
    """A folder given as one video (not a batch) must hold its frames: checked before the
    model loads (a folder with nothing to read was taken for a video's frames, and the
    error named its output instead)."""
    if path.is_dir() and not holds_videos(path) and not frame_files(path):
        raise InputError(f"folder {path} holds no videos, animated images, frame strips or "
                         f"image frames: nothing to read as a {what}")
