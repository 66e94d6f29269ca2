"""Still and animated images (png, jpg, webp, ...) and single video frames, decoded to what
they show: (H, W, 3) uint8 RGB, upright, square pixels, transparency on white; and the
authors' frame strips (square frames side by side in one image)."""

from __future__ import annotations

import numbers
import operator
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import InputError, first_line
from .files import av_path, not_found
from .frametiming import MS_PER_S, frame_timing

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
ANIMATED_SUFFIXES = {".webp", ".png"}  # image formats that may hold an animation
ANIMATION_HEADER_BYTES = 64 << 10  # where a PNG's acTL chunk sits (after IHDR, an ICC profile)
WEBP_ANIMATION_FLAG = 0x02  # in the flags byte of a WebP's VP8X chunk (file offset 20)
WHITE = 255.0  # what transparent pixels of an image become
# pixels wider or narrower than this are a damaged header, not a format (HDV's are 4:3, DV's
# 32:27 or 8:9): such a ratio is ignored rather than making frames hundreds of MB
MAX_PIXEL_ASPECT = 4


def _opaque_rgb(frame: av.VideoFrame) -> np.ndarray:
    """(H, W, 3) uint8, a frame with transparency composited onto white: dropping the alpha
    would show what transparent pixels happen to hold, often black, and a cut-out animal is
    meant to sit on white (MGif's, the cartoon checkpoint's data, do)."""
    if not (frame.format.has_palette or any(c.is_alpha for c in frame.format.components)):
        return frame.to_ndarray(format="rgb24")
    return _on_white(frame.to_ndarray(format="rgba"))


def _on_white(rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 RGBA composited onto white: (H, W, 3) uint8 RGB."""
    alpha = rgba[..., 3:].astype(np.float32) / 255  # (H, W, 1)
    return (rgba[..., :3] * alpha + WHITE * (1 - alpha)).round().astype(np.uint8)


def upright(frame: av.VideoFrame, pixel_aspect: Fraction | None = None) -> np.ndarray:
    """The frame as it is meant to be seen, (H, W, 3) uint8: phones store portrait videos and
    photos sideways plus a rotation (the container's display matrix, a JPEG's EXIF
    orientation), which FFmpeg reports and does not apply. Mirrorings are not undone.
    Transparent pixels come out white. Pixels ``pixel_aspect`` times as wide as high (a
    video's sample aspect ratio: HDV's 1440x1080 is shown 1920 wide) are made square."""
    image = _opaque_rgb(frame)
    if pixel_aspect and pixel_aspect != 1 and \
            1 / MAX_PIXEL_ASPECT <= pixel_aspect <= MAX_PIXEL_ASPECT:  # (H, W * aspect, 3)
        height, width = image.shape[:2]
        shown = max(1, round(width * pixel_aspect))
        image = cv2.resize(image, (shown, height), interpolation=cv2.INTER_AREA
                           if shown < width else cv2.INTER_CUBIC)
    quarter_turns = round(frame.rotation / 90) % 4  # counter-clockwise, as np.rot90 turns
    return np.ascontiguousarray(np.rot90(image, quarter_turns)) if quarter_turns else image


def read_image(path: str | Path) -> np.ndarray:
    """A still image (png, jpg, webp, ...; grayscale and RGBA converted) as (H, W, 3) uint8."""
    path = Path(path)
    if not path.is_file():
        raise not_found(path, "image")
    jpeg = False
    try:
        with av.open(av_path(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path} is not an image")
            stream = container.streams.video[0]
            if container.streams.audio and stream.disposition & av.stream.Disposition.attached_pic:
                raise InputError(f"{path} holds no image, only the cover picture of an audio "
                                 "file")  # whatever its suffix says (an .m4a read as an image)
            jpeg = stream.codec_context.name == "mjpeg"
            if jpeg:  # FFmpeg paints the part a cut-short JPEG lacks flat green without a
                # word; "explode" makes that an error (it fails a TIFF that is whole: JPEG alone)
                stream.codec_context.options = {"err_detect": "explode"}
            for frame in container.decode(video=0):
                return upright(frame)
    except av.FFmpegError as exc:
        animation = read_animation(path)  # FFmpeg decodes no animated WebP
        if animation is not None:
            return animation[0][0]
        damaged = " (a damaged or cut-short JPEG)" if jpeg else ""
        raise InputError(f"cannot read image {path}{damaged}: {first_line(exc)}") from None
    raise InputError(f"{path} holds no image")


def read_animation(path: Path) -> tuple[np.ndarray, list[int], Fraction] | None:
    """An animated WebP or PNG of 2 frames or more: its distinct (T, H, W, 3) uint8 frames
    (transparency on white), how many frame times each lasts (see frame_timing) and the frame
    rate; None for anything else, and where OpenCV is older than 4.11 (no imreadanimation:
    the package asks for 4.11, training/gpu.py's machine may have less)."""
    if not hasattr(cv2, "imreadanimation") or not is_animated(path):
        return None
    quiet = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # its failure is ours
    try:  # to say, in one line, not OpenCV's log of asserts on stderr
        ok, animation = cv2.imreadanimation(str(path))
    finally:
        cv2.utils.logging.setLogLevel(quiet)
    if not ok:  # its header announces an animation: not a still image read as one
        raise InputError(f"cannot read the animation in {path} (damaged or cut short?)")
    if len(animation.frames) < 2:
        return None
    frames = np.stack([_bgr_on_white(frame) for frame in animation.frames])  # (T, H, W, 3)
    durations_ms = [int(d) for d in animation.durations]
    if len(durations_ms) != len(frames):  # no usable timing: shown evenly
        durations_ms = [0] * len(frames)
    repeats, fps = frame_timing(durations_ms, MS_PER_S)
    return frames, repeats, fps


def is_animated(path: Path) -> bool:
    """Whether the file's header announces an animation: a PNG's acTL chunk (before its first
    IDAT) or the animation flag of a WebP's VP8X chunk. Reading only the header spares still
    images a second decode (the authors' datasets are thousands of PNG strips)."""
    if path.suffix.lower() not in ANIMATED_SUFFIXES:
        return False
    with open(path, "rb") as file:
        head = file.read(ANIMATION_HEADER_BYTES)
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return b"acTL" in head.split(b"IDAT", 1)[0]
    if head[:4] == b"RIFF" and head[8:16] == b"WEBPVP8X" and len(head) > 20:
        return bool(head[20] & WEBP_ANIMATION_FLAG)
    return False


def _bgr_on_white(frame: np.ndarray) -> np.ndarray:
    """OpenCV's (H, W), (H, W, 3) BGR or (H, W, 4) BGRA uint8 as (H, W, 3) RGB on white."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    if frame.shape[2] == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
    return _on_white(cv2.cvtColor(frame, cv2.COLOR_BGRA2RGBA))


def split_strip(image: np.ndarray) -> list[np.ndarray]:
    """The authors' strips stack square frames left to right: (H, T*H, 3) -> T x (H, H, 3)."""
    height = image.shape[0]
    return [image[:, i:i + height] for i in range(0, image.shape[1] - height + 1, height)]


def is_strip_size(height: int, width: int, min_frames: int = 2) -> bool:
    """Whether a height x width image is a strip of at least ``min_frames`` square frames
    side by side (the authors' datasets)."""
    return height > 0 and width >= min_frames * height and width % height == 0


def is_strip(image: np.ndarray, min_frames: int = 2) -> bool:
    return is_strip_size(*image.shape[:2], min_frames)


# frames a strip must hold to make its folder a batch: 2:1 frames (1920x960, as streaming
# services shoot) in a folder of frames are one video, not a batch of 2-frame strips
BATCH_STRIP_MIN_FRAMES = 4


def image_is_strip(path: Path, min_frames: int = BATCH_STRIP_MIN_FRAMES) -> bool:
    """Whether an image file is a strip of at least ``min_frames`` frames, by its size (read
    from its header)."""
    try:
        with av.open(av_path(path)) as container:
            context = container.streams.video[0].codec_context
            width, height = context.width, context.height
    except (av.FFmpegError, IndexError):
        return False
    return is_strip_size(height, width, min_frames)


def rgb_frame(frame, taker: str) -> np.ndarray:
    """An (H, W, 3) uint8 RGB frame as a numpy array (a tensor's copied: torchvision's and
    decord's readers give them), or InputError naming ``taker``, what takes it."""
    if hasattr(frame, "numpy") and not isinstance(frame, np.ndarray):
        frame = frame.numpy(force=True)  # (a torch tensor)
    if (not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim != 3
            or frame.shape[2] != 3 or not frame.size):
        got = (f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray)
               else type(frame).__name__)
        raise InputError(f"{taker} takes an (H, W, 3) uint8 RGB frame, got {got}")
    return frame


def pixel_size(size, what: str) -> tuple[int, int]:
    """A side or (H, W), whole numbers of pixels, as (H, W); InputError naming ``what``
    unless whole and positive."""
    sides = (size, size) if isinstance(size, numbers.Number) else size
    try:
        height, width = sides
        if min(operator.index(height), operator.index(width)) < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise InputError(f"{what} is a side or (H, W), whole numbers of pixels, not "
                         f"{size!r}") from None
    return operator.index(height), operator.index(width)
