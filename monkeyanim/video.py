"""Reading videos (and images, decoded by images.py) through PyAV, streamed frame by frame,
and fitting frames to a model's size (videowriter.py writes them).

Frames are numpy arrays (H, W, 3) uint8 RGB. Every reader raises InputError on bad input.
"""

from __future__ import annotations

import itertools
import operator
import queue
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from .errors import InputError, check_count, first_line
from .files import av_path, not_found
from .frametiming import DEFAULT_FPS, restore_runs, restored_timing
from .images import (BATCH_STRIP_MIN_FRAMES, IMAGE_SUFFIXES, is_strip, pixel_size,
                     read_animation, read_image, rgb_frame, split_strip, upright)

# what a folder's videos end in (any file FFmpeg reads works when named directly); .ts, .mts
# and .m2ts: MPEG transport streams, from broadcast recordings and camcorders (AVCHD)
VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif", ".m4v", ".ts", ".mts",
                  ".m2ts", ".mpg", ".mpeg", ".3gp", ".flv", ".wmv"}
MATROSKA_DURATION = re.compile(r"(\d+):(\d\d):(\d\d(?:\.\d+)?)")  # a track's DURATION tag
IMAGE_OUTPUTS = (".png", ".jpg", ".jpeg")  # single frames (keypoints of an image)
# a video whose frames stop more than this before its stated end (seconds, fraction of it) is
# reported as cut short; stated and decoded ends agree to 0.05 s on the 39 real face videos
END_SLACK_S, END_SLACK_FRACTION = 1.0, 0.05
LONG_HOLD_S = 10.0  # a frame shown longer is worth a word: a gap that may be damage
MAX_HOLD_S = 600.0  # one shown longer is damage, not a pause: the video is refused
QUEUE_FRAMES = 64  # frames buffered between decoding / encoding threads and the model
# frames per network call: 8 ran fastest on a 2-core CPU (README, Speed and memory)
BATCH_FRAMES = 8
Progress = Callable[[int, int | None], None]  # told (frames done, total or None)


@dataclass
class VideoReader:
    """A source of frames: a video file, an authors' frame strip, a folder of frames, an image
    or an animated image (WebP, PNG).

    ``frames()`` may be called more than once; each call decodes again from the start.
    """

    path: Path
    fps: Fraction
    num_frames: int | None  # from the container; None when unknown
    has_audio: bool = False
    kind: str = "video"  # 'video', 'strip', 'folder', 'image' or 'animation'
    # a strip, image or animation ((T, H, W, 3)), decoded once by open_video (which had to, to
    # tell them apart)
    image: np.ndarray | None = field(default=None, repr=False)
    duration_s: float | None = None  # the video stream's (else the container's), when stated
    start_s: float = 0.0  # when the video stream starts, seconds (recordings, MPEG-TS: not 0)
    # an animation's: how many frame times each of its frames lasts
    repeats: list[int] | None = field(default=None, repr=False)
    # a video whose frames do not each last 1 / fps: each frame is placed by its timestamp,
    # repeated for the frame times it lasts (see frametiming.restored_timing, restore_runs)
    by_timestamp: bool = False
    longest_frame_s: float | None = None  # with by_timestamp: the longest a frame shows
    # where the last pass through the frames got to: the last frame's end, in seconds
    decoded_end_s: float | None = field(default=None, init=False, repr=False)
    # when the first frame that decodes starts, seconds, once a pass has reached it
    decoded_start_s: float | None = field(default=None, init=False, repr=False)

    @property
    def expected_frames(self) -> int | None:
        """The frame count, else duration times rate (Matroska and WebM state no count):
        what a progress bar can aim at, not a promise."""
        if self.num_frames or not self.duration_s:
            return self.num_frames
        return max(1, round(self.duration_s * float(self.fps)))

    def ended_early(self) -> str | None:
        """Why the last pass through the frames may have missed some: it stopped well before
        the duration the file states (a download cut short, a damaged file); else None."""
        stated, reached = self.duration_s, self.decoded_end_s
        if self.kind != "video" or not stated or reached is None:
            return None
        if stated - reached <= max(END_SLACK_S, END_SLACK_FRACTION * stated):
            return None
        return (f"{self.path} ended at {reached:.1f} s of the {stated:.1f} s it states: the file "
                f"may be cut short or damaged (the output holds the frames that decoded)")

    def hold_note(self) -> str | None:
        """A note when one frame shows for over LONG_HOLD_S (a gap in the timestamps, which
        may be a damaged one): the output holds it as long, as players do; else None."""
        if not self.longest_frame_s or self.longest_frame_s <= LONG_HOLD_S:
            return None
        return (f"{self.path}: one frame shows for {self.longest_frame_s:.0f} s (a pause, or "
                f"a gap in its timestamps), so the output holds it that long, as players do")

    def strip_note(self) -> str | None:
        """A note when this image was read as a strip of so few frames (2 or 3) that it may
        well be one wide photo (2:1 is a common shape); else None."""
        if self.kind != "strip" or self.num_frames >= BATCH_STRIP_MIN_FRAMES:
            return None
        return (f"{self.path} was read as a strip of {self.num_frames} square frames side by "
                f"side (its width is {self.num_frames} times its height); to use it as one "
                f"image, crop it to another shape first")

    def first_frame_s(self) -> float:
        """When the first frame that decodes is shown, in seconds: where the picture starts,
        and so the audio kept with it. Later than ``start_s`` (the first packet's time) in a
        recording cut mid-GOP, whose first packets cannot be decoded alone."""
        if self.kind != "video":
            return self.start_s
        if self.decoded_start_s is None:  # open_video's check has decoded it: not again
            first_frames(self, 1)
        return self.start_s if self.decoded_start_s is None else self.decoded_start_s

    def frames(self) -> Iterator[np.ndarray]:
        if self.kind == "video":
            self.decoded_end_s = None
            decoded = self._noting_end(_decode_video(self.path))
            yield from (restore_runs(decoded, 1 / self.fps, self.duration_s) if self.by_timestamp
                        else (frame for frame, _, _ in decoded))
        elif self.kind == "folder":
            for file in frame_files(self.path):
                yield read_image(file)
        elif self.kind == "animation":
            for frame, count in zip(self.image, self.repeats, strict=True):  # (H, W, 3) each
                yield from [frame] * count
        else:
            image = self.image if self.image is not None else read_image(self.path)
            yield from (split_strip(image) if self.kind == "strip" else [image])

    def _noting_end(self, decoded: Iterator[tuple]) -> Iterator[tuple]:
        """Pass decoded frames on, keeping where the first one starts (first_frame_s) and
        where the last one ends (ended_early)."""
        for frame, start_s, end_s in decoded:
            if self.decoded_start_s is None:
                self.decoded_start_s = start_s
            self.decoded_end_s = end_s
            yield frame, start_s, end_s


PROBE_PACKETS = 64  # read to tell moving video streams from stills when a file has several


def frame_files(folder: Path) -> list[Path]:
    """The image files of a folder of frames, in name order (the order they are read)."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def open_video(path: str | Path) -> VideoReader:
    """Open a driving input; checks it exists and holds at least one decodable frame."""
    path = Path(path)
    if path.is_dir():
        return _open_folder(path)
    if not path.is_file():
        raise not_found(path, "video")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return _open_image(path)
    reader = _open_container(path)
    if not first_frames(reader, 1):
        raise InputError(f"video {path} has no frames")
    return reader


def _open_folder(path: Path) -> VideoReader:
    """A folder of image frames, read in name order."""
    files = frame_files(path)
    if not files and any(p.suffix.lower() in VIDEO_SUFFIXES for p in path.iterdir()):
        raise InputError(f"folder {path} holds videos, but a folder given as one video (or "
                         "inside a folder of videos) is read as one video's image frames")
    if not files:
        raise InputError(f"folder {path} holds no image frames")
    return VideoReader(path, DEFAULT_FPS, len(files), kind="folder")


def _open_image(path: Path) -> VideoReader:
    """An animated gif/WebP, a strip of square frames side by side, or one still image."""
    animation = read_animation(path)
    if animation is not None:
        frames, repeats, fps = animation
        return VideoReader(path, fps, sum(repeats), kind="animation", image=frames,
                           repeats=repeats)
    image = read_image(path)
    if is_strip(image):
        return VideoReader(path, DEFAULT_FPS, image.shape[1] // image.shape[0], kind="strip",
                           image=image)
    return VideoReader(path, DEFAULT_FPS, 1, kind="image", image=image)


def _open_container(path: Path) -> VideoReader:
    """A video file PyAV opens; its timing restored where the container's header is wrong."""
    try:
        with av.open(av_path(path)) as container:
            stream = video_stream(container)
            if stream is None:
                raise InputError(f"video {path} has no frames (no video stream)")
            if stream.disposition & av.stream.Disposition.attached_pic:
                raise InputError(f"{path} holds no video, only a cover picture (an audio file "
                                 "with artwork)")
            fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
            count, longest_s = stream.frames or None, None
            restored = restored_timing(container, stream)
            if restored is not None:
                count, fps, longest_s, gap_s = restored
                _check_hold(path, gap_s)
            return VideoReader(path, Fraction(fps), count,
                               has_audio=bool(container.streams.audio),
                               duration_s=_stated_duration(container, stream),
                               start_s=_start_seconds(stream),
                               by_timestamp=restored is not None,
                               longest_frame_s=longest_s)
    except av.FFmpegError as exc:
        raise InputError(f"cannot read video {path}: {first_line(exc)}") from None


def _check_hold(path: Path, gap_s: float) -> None:
    """InputError for a gap past MAX_HOLD_S between two frames: a timestamp that jumps hours
    (damage) would have the output hold the frame before it as long, an hour of work for
    nothing (players hold it). A last frame shown long (a gif's pause at its end) is no gap."""
    if gap_s > MAX_HOLD_S:
        raise InputError(f"{path}: one frame shows for {gap_s / 60:.0f} min (a gap in its "
                         f"timestamps; the output would hold it as long): refused past "
                         f"{MAX_HOLD_S / 60:.0f} min. To give every frame one frame time: "
                         f"ffmpeg -i IN -vf setpts=N/FRAME_RATE/TB OUT")


def first_frames(reader: VideoReader, count: int) -> list[np.ndarray]:
    """Up to ``count`` frames from the start, the decoder closed at once (left to the
    garbage collector, it could still be closing as the process exits)."""
    frames = reader.frames()
    try:
        return list(itertools.islice(frames, count))
    finally:
        frames.close()


def _start_seconds(stream) -> float:
    """When the video stream starts, in seconds (0 where the file does not say)."""
    if stream.start_time is None or stream.time_base is None:
        return 0.0
    return float(stream.start_time * stream.time_base)


def _stated_duration(container, stream) -> float | None:
    """Seconds from 0 to the video's end, as the file states: the video stream's own when it
    has one (Matroska and WebM give it as a DURATION tag), else the container's, unless other
    streams may have made that longer (audio that outlasts the picture)."""
    if stream.duration:
        return float((stream.duration + (stream.start_time or 0)) * stream.time_base)
    tagged = MATROSKA_DURATION.fullmatch(stream.metadata.get("DURATION", ""))
    if tagged:
        hours, minutes, seconds = tagged.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    if container.duration and len(container.streams) == 1:
        return container.duration / av.time_base
    return None


def video_stream(container) -> av.VideoStream | None:
    """The video stream to read; None without any. Of several, one of moving pictures (a
    thumbnail or cover has one frame), FFmpeg's choice among those; a cover alone is
    returned for open_video to refuse."""
    videos = [stream for stream in container.streams.video
              if not stream.disposition & av.stream.Disposition.attached_pic]
    if len(videos) <= 1:
        return next(iter(videos or container.streams.video), None)
    moving = _moving_streams(container.name, [stream.index for stream in videos])
    candidates = [stream for stream in videos if stream.index in moving] or videos
    best = container.streams.best("video")
    return best if best in candidates else candidates[0]


def _moving_streams(path: str, indices: list[int]) -> set[int]:
    """Which of these streams hold more than one picture, from the first PROBE_PACKETS
    packets (in a file of its own: the caller's is left where it is)."""
    counts = dict.fromkeys(indices, 0)
    with av.open(path) as probe:
        for number, packet in enumerate(probe.demux([probe.streams[i] for i in indices])):
            counts[packet.stream.index] += bool(packet.size)
            if number >= PROBE_PACKETS:
                break
    return {index for index, count in counts.items() if count > 1}


def _decode_video(path: Path) -> Iterator[tuple[np.ndarray, float | None, float | None]]:
    """(H, W, 3) uint8 frames, each with the times its display starts and ends, in seconds
    (None where the file does not say)."""
    try:
        with av.open(av_path(path)) as container:
            stream = video_stream(container)
            stream.thread_type = "AUTO"
            # the container's, else the codec's, as FFmpeg guesses it; None or 0 when unknown
            pixel_aspect = stream.sample_aspect_ratio or stream.codec_context.sample_aspect_ratio
            for frame in container.decode(stream):
                shown_s = float(frame.duration * frame.time_base) if frame.duration else 0.0
                start_s = frame.time
                yield (upright(frame, pixel_aspect), start_s,
                       None if start_s is None else start_s + shown_s)
    except av.FFmpegError as exc:
        raise InputError(f"cannot decode video {path}: {first_line(exc)}") from None


def read_source(path: str | Path, whole: bool = False) -> np.ndarray:
    """The source image: an image file, or the first frame of a video or of a frame strip
    (of BATCH_STRIP_MIN_FRAMES or more: a 2:1 photo stays whole; ``whole``: any image stays
    whole, as one given a crop box or pasted back onto must be). See read_source_noted."""
    return read_source_noted(path, whole)[0]


def read_source_noted(path: str | Path, whole: bool = False) -> tuple[np.ndarray, str | None]:
    """read_source's image (H, W, 3) uint8, and a note for the user when it is the first
    frame of what was read as a strip: a wide photo (a 4:1 banner) is cut to its left
    square else without a word. Judged on the upright picture (after EXIF rotation)."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"source {path} is a folder, expected an image")
    if not path.is_file():
        raise not_found(path, "source")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return first_frames(open_video(path), 1)[0], None
    image = read_image(path)
    if whole or not is_strip(image, BATCH_STRIP_MIN_FRAMES):
        return image, None
    note = (f"source {path.name} was read as a frame strip (its width is a multiple of its "
            f"height, {BATCH_STRIP_MIN_FRAMES} or more): its first square frame is the source; "
            "to animate the whole picture, crop it to another shape first (or --paste-back)")
    return np.ascontiguousarray(image[:, :image.shape[0]]), note  # (H, H, 3)


def check_batch_size(batch_size: int) -> None:
    """Frames per network call: the CLI asks before the model loads, frame_batches again (a
    fraction would never fill a batch, and the whole video would go in one)."""
    check_count(batch_size, "--batch-size")
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")


def centred_square(height: int, width: int) -> tuple[int, int, int, int]:
    """The largest square (x, y, w, h) in the middle of a height x width frame."""
    side = min(height, width)
    return (width - side) // 2, (height - side) // 2, side, side


def fit_frame(frame: np.ndarray, size: tuple[int, int] | int,
              crop: tuple[int, int, int, int] | None = None, what: str = "the frame") -> np.ndarray:
    """Cut ``crop`` (default: the centred square) and resize to ``size`` (H, W), or a
    side for a square: (H, W, 3).
    ``what`` names the frame in the error of a box that does not fit it. ``frame``: an
    (H, W, 3) uint8 RGB numpy array (or tensor: torchvision's and decord's readers give
    them)."""
    frame = rgb_frame(frame, "fit_frame")
    height, width = frame.shape[:2]
    size = pixel_size(size, "fit_frame's size")
    if crop is None:
        x, y, w, h = centred_square(height, width)
    else:
        try:  # ints of any kind: Python's, numpy's, a torch tensor's
            x, y, w, h = map(operator.index, crop)
        except (TypeError, ValueError):
            raise InputError(f"a crop box is four whole numbers of pixels (x, y, w, h), not "
                             f"{crop!r}") from None
        crop = (x, y, w, h)
        if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
            raise InputError(f"crop box {tuple(crop)} lies outside {what} ({width}x{height})"
                             if w > 0 and h > 0 else f"crop box {tuple(crop)} is empty")
    frame = frame[y:y + h, x:x + w]
    if frame.shape[:2] == tuple(size):
        return np.ascontiguousarray(frame)
    shrinking = h > size[0] or w > size[1]
    return cv2.resize(frame, (size[1], size[0]),
                      interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def prefetch(items: Iterable, depth: int = QUEUE_FRAMES) -> Iterator:
    """Run ``items`` in a background thread, ``depth`` items ahead; errors re-raised here."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    done, stop, main = object(), threading.Event(), threading.main_thread()

    def put(item) -> bool:
        # stopped when the consumer closes, or when the program ends: an exception on its way
        # out (Ctrl-C) keeps the consumer alive, and a daemon thread still inside OpenCV or
        # FFmpeg as the interpreter finalised could abort it ("terminate called...")
        while not stop.is_set() and main.is_alive():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as exc:  # handed to the consumer
            put(exc)

    threading.Thread(target=work).start()  # not a daemon: the program's end waits for it
    try:
        while (item := box.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
