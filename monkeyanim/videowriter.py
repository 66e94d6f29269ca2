"""Writing videos through PyAV: mp4, mov and mkv (H.264) or webm (VP9), each with the
driving video's audio, gif (a palette per frame) or animated WebP, encoded in a background
thread into a temp file beside the output that is renamed only when complete.
"""

from __future__ import annotations

import numbers
import queue
import threading
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import av.filter
import numpy as np

from .errors import InputError, OutputError, cannot_write, check_count
from .files import av_path, publish, temp_beside
from .frametiming import MAX_RATE_DENOMINATOR
from .video import QUEUE_FRAMES

X264_OPTIONS = {"crf": "18", "preset": "veryfast"}
# libvpx's fastest mode: 670 frames/s at 256 px on this project's 2-core CI machine, within
# a tenth of x264's pixel error at about its file size
VP9_OPTIONS = {"crf": "24", "b": "0", "deadline": "realtime", "cpu-used": "8", "row-mt": "1"}
# libwebp's lossy quality (0-100): at 90 a 256 px animation takes a seventh of its gif's bytes
WEBP_OPTIONS = {"quality": "90"}
WEBP_LOOP_FOREVER = {"loop": "0"}  # the muxer's default plays once; gifs loop, so do these
# the index (moov) before the frames, so that browsers and players start before the end arrives
FAST_START = {"movflags": "+faststart"}
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "opus", "ac3", "eac3", "flac"})
MOV_AUDIO_COPY = frozenset({"aac", "mp3", "alac", "ac3", "eac3"})
MKV_AUDIO_COPY = MP4_AUDIO_COPY | {"vorbis", "pcm_s16le", "pcm_s24le", "pcm_f32le"}
OPUS_RATE_HZ = 48_000  # what libopus encodes at (it resamples everything else)


@dataclass(frozen=True)
class OutputFormat:
    """How one output suffix is written: FFmpeg's muxer (with ``muxer_options``) and video
    encoder (with ``options``), and what becomes of the driving video's audio (remuxed when
    its codec is in ``audio_copy``, else transcoded to ``audio_codec``; None: the format holds
    no sound)."""

    muxer: str
    codec: str
    options: dict = field(default_factory=dict)
    audio_copy: frozenset = frozenset()
    audio_codec: str | None = None
    muxer_options: dict = field(default_factory=dict)


OUTPUT_FORMATS = {
    ".mp4": OutputFormat("mp4", "libx264", X264_OPTIONS, MP4_AUDIO_COPY, "aac", FAST_START),
    ".mov": OutputFormat("mov", "libx264", X264_OPTIONS, MOV_AUDIO_COPY, "aac", FAST_START),
    ".mkv": OutputFormat("matroska", "libx264", X264_OPTIONS, MKV_AUDIO_COPY, "aac"),
    ".webm": OutputFormat("webm", "libvpx-vp9", VP9_OPTIONS, frozenset({"opus", "vorbis"}),
                          "libopus"),
    ".gif": OutputFormat("gif", "gif"),
    ".webp": OutputFormat("webp", "libwebp_anim", WEBP_OPTIONS,
                          muxer_options=WEBP_LOOP_FOREVER),
}
VIDEO_OUTPUTS = tuple(OUTPUT_FORMATS)  # what VideoWriter writes, mp4 (the default) first
# the longest frame side every encoder here takes (x264 16,384, WebP 16,383; FFmpeg itself
# refuses frames over about 268 M pixels), e.g. a pasted-back panorama goes past it
ENCODER_MAX_SIDE_PX = 16_383
# What the frames are, said in the stream (FFmpeg's numbers): sRGB pixels (bt709 primaries,
# the sRGB curve) turned into limited-range YUV with the BT.601 matrix, as FFmpeg converts
# RGB by default. Untagged, players guess BT.709 for HD and shift the colours.
COLOUR_TAGS = {"colorspace": 6, "color_primaries": 1, "color_trc": 13, "color_range": 1}
MIN_FPS, MAX_FPS = 0.01, 1000.0  # the output rates --fps accepts, in frames a second
# GIF frame delays are whole hundredths of a second, and browsers show delays under two of
# them as a tenth of a second: faster videos (phones film at 60-240 fps) keep a frame every 20 ms
GIF_TICKS_PER_S = 100
GIF_MIN_DELAY_TICKS = 2
# at most QUEUE_FRAMES frames queued for the encoder, and this many bytes of them: 64 frames
# of a 4000 px output or a pasted-back phone photo are gigabytes
QUEUE_BYTES = 256 << 20


def _a_rate(fps) -> bool:
    """Whether ``fps`` is a number (Python's or numpy's: Real), not a bool."""
    return isinstance(fps, numbers.Real) and not isinstance(fps, bool)


def _check_rate(fps: float, name: str) -> None:
    """InputError unless ``fps`` (given as ``name``) is a positive, finite number."""
    if not _a_rate(fps) or not 0 < fps < float("inf"):  # (NaN fails it too)
        raise InputError(f"{name} must be a positive number of frames a second, not {fps!r}")


def check_fps(fps: float) -> None:
    """An output frame rate asked for (--fps): NaN, infinities and rates no player shows
    (beyond a frame every 100 s or 1,000 a second) would fail deep in FFmpeg or Fraction."""
    if not _a_rate(fps):
        raise InputError(f"--fps must be a number of frames a second, not {fps!r}")
    if not MIN_FPS <= fps <= MAX_FPS:  # also False for NaN
        raise InputError(f"--fps must be between {MIN_FPS:g} and {MAX_FPS:g} frames a second, "
                         f"not {float(fps):g}")


def check_side(size: int) -> None:
    """--size past the largest side the encoders take (a cv2 error once frames came)."""
    if size > ENCODER_MAX_SIDE_PX:
        raise InputError(f"--size must be at most {ENCODER_MAX_SIDE_PX:,} (the largest side "
                         f"the encoders take), not {size:,}")


def check_output_options(fps: float | None, size: int | None, paste_back: bool,
                         side_by_side: bool) -> None:
    """animate's output settings (None: not given), each possible and all together."""
    if fps is not None:
        check_fps(fps)
    if size is not None:
        check_count(size, "--size", 2)
        check_side(size)
    if paste_back and (side_by_side or size):
        raise InputError("--paste-back writes at the source's resolution: drop --side-by-side "
                         "and --size")


class VideoWriter:
    """Encode frames to mp4, mov or mkv (H.264, yuv420p), webm (VP9), gif or animated WebP
    (lossy, looping), chosen by the output's suffix (OUTPUT_FORMATS).

    Frames are encoded in a background thread. The file appears at ``path`` only after
    ``close()`` succeeds; on error or interruption the temp file is removed and an existing
    file at ``path`` is left untouched. ``audio_from``: copy that video's audio (not into
    gif or WebP) from ``audio_start_s`` (its first frame's time) on, trimmed to the video's
    duration. Use it as a context manager (or end with ``close()`` or ``abort()``): a writer
    left open keeps its encoder thread and its temp file.
    """

    def __init__(self, path: str | Path, fps: Fraction | float,
                 audio_from: str | Path | None = None, audio_start_s: float = 0.0):
        _check_rate(fps, "fps")  # (a video read may have any rate: not check_fps's range)
        self.path = Path(path)
        self.suffix = self.path.suffix.lower()
        if self.suffix not in VIDEO_OUTPUTS:
            raise InputError(f"output {self.path} must end in {', '.join(VIDEO_OUTPUTS[:-1])} "
                             f"or {VIDEO_OUTPUTS[-1]}")
        self.format = OUTPUT_FORMATS[self.suffix]
        # (Fraction takes Python's and numpy's ints and floats, but not numpy's float32)
        self.fps = Fraction(fps if isinstance(fps, numbers.Rational) else float(fps)
                            ).limit_denominator(MAX_RATE_DENOMINATOR)
        self.audio_from = Path(audio_from) if audio_from and self.format.audio_codec else None
        self.audio_start_s = audio_start_s
        self._tmp = temp_beside(self.path, self.suffix)
        self._container = av.open(av_path(self._tmp), mode="w", format=self.format.muxer,
                                  options=self.format.muxer_options)
        self._stream = None
        self._audio: _AudioCopy | None = None
        self._palette: _GifPalette | None = None
        self._count = 0
        self._last_tick: int | None = None  # GIF time of the last frame kept
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_FRAMES)
        self._shape: tuple[int, ...] | None = None  # (H, W, 3) of the first frame
        self._error: BaseException | None = None
        self._ended = False  # closed or aborted: its thread is gone
        self._thread = threading.Thread(target=self._encode_all, daemon=True)
        self._thread.start()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    @property
    def frames_written(self) -> int:
        """Frames handed to the encoder so far (a gif keeps fewer of a video over 50 fps)."""
        return self._count

    def write(self, frame: np.ndarray) -> None:
        """Queue one (H, W, 3) uint8 RGB frame, every one of the first one's size. A copy is
        queued: the caller may fill the same array again for the next frame."""
        if self._ended:  # the encoder has gone: the frame would be lost, the queue fill up
            raise InputError(f"the writer of {self.path} is closed: open another to write "
                             "more")
        if self._error is not None:
            raise self._error
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"a frame to write must be (H, W, 3) uint8 RGB, got "
                             f"{tuple(frame.shape)} {frame.dtype}")
        if self._shape is None:  # the first frame sizes the queue, before anything is queued
            self._queue.maxsize = max(2, min(QUEUE_FRAMES, QUEUE_BYTES // max(1, frame.nbytes)))
            self._shape = frame.shape
        elif frame.shape != self._shape:
            raise InputError(f"frame of {frame.shape[1]}x{frame.shape[0]} among frames of "
                             f"{self._shape[1]}x{self._shape[0]}: a video keeps one size")
        self._queue.put(frame.copy())

    def _open_stream(self, height: int, width: int):
        if self.suffix == ".gif":
            stream = self._container.add_stream("gif", rate=GIF_TICKS_PER_S)
            stream.pix_fmt = "pal8"
            self._palette = _GifPalette(height, width)
        else:
            stream = self._container.add_stream(self.format.codec, rate=self.fps,
                                                options=self.format.options)
            stream.pix_fmt = "yuv420p"
            for tag, value in COLOUR_TAGS.items():
                setattr(stream.codec_context, tag, value)
        stream.width, stream.height = width, height
        if self.audio_from is not None:
            # every stream must exist before the first packet is written (the mp4 header)
            self._audio = _AudioCopy(self.audio_from, self._container, self.format,
                                     self.audio_start_s)
        return stream

    def _encode_all(self) -> None:
        try:
            while (frame := self._queue.get()) is not None:
                if self._error is None:
                    self._encode(frame)
        except BaseException as exc:
            self._error = cannot_write(self.path, exc) if isinstance(exc, OSError) else exc
            while self._queue.get() is not None:  # drain so writers never block
                pass

    def _encode(self, frame: np.ndarray) -> None:
        if self.format.codec == "libx264" and (frame.shape[0] % 2 or frame.shape[1] % 2):
            # x264's yuv420p needs even sizes (VP9 and WebP take odd ones): repeat the last
            # row / column
            frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)),
                           mode="edge")
        try:
            self._encode_frame(frame)
        except av.FFmpegError as exc:
            if isinstance(exc, OSError):  # a write that failed: close() names the output
                raise
            height, width = frame.shape[:2]
            if max(height, width) > ENCODER_MAX_SIDE_PX:
                raise OutputError(f"cannot encode {width}x{height} frames to {self.path}: too "
                                  f"large for {self.format.codec} (at most "
                                  f"{ENCODER_MAX_SIDE_PX:,} px a side)") from exc
            raise OutputError(f"cannot write {self.path}: {exc}") from exc

    def _encode_frame(self, frame: np.ndarray) -> None:
        if self._stream is None:
            self._stream = self._open_stream(*frame.shape[:2])
        pts, time_base = self._count, 1 / self.fps
        if self._palette is not None:
            pts, time_base = self._gif_tick(), Fraction(1, GIF_TICKS_PER_S)
        self._count += 1
        if pts is None:  # a GIF frame too soon after the last one kept
            return
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts, video_frame.time_base = pts, time_base
        for ready in self._palette.convert(video_frame) if self._palette else [video_frame]:
            packets = self._stream.encode(ready)
            if self._palette is not None:  # else the last frame would flash for one tick
                for packet in packets:
                    packet.duration = max(GIF_MIN_DELAY_TICKS, round(GIF_TICKS_PER_S / self.fps))
            self._container.mux(packets)

    def _gif_tick(self) -> int | None:
        """The frame's time in GIF ticks, or None to drop it: it would follow the last frame
        kept sooner than GIF_MIN_DELAY_TICKS (the video keeps its duration, not its frames)."""
        tick = round(self._count * GIF_TICKS_PER_S / self.fps)
        if self._last_tick is not None and tick - self._last_tick < GIF_MIN_DELAY_TICKS:
            return None
        self._last_tick = tick
        return tick

    def close(self) -> None:
        """Finish encoding, copy audio, and move the file into place (once: a second call
        does nothing)."""
        if self._ended:
            return
        self._ended = True
        self._queue.put(None)
        self._thread.join()
        try:
            if self._error is not None:
                raise self._error
            if self._count == 0:
                raise InputError(f"no frames to write to {self.path}")
            self._container.mux(self._stream.encode(None))
            if self._audio is not None:
                self._audio.copy(self._count / self.fps)
            self._container.close()
            publish(self._tmp, self.path)
        except OSError as exc:  # disk full, no permission: FFmpeg's and the OS's own errors
            raise cannot_write(self.path, exc) from exc
        except av.FFmpegError as exc:  # e.g. audio that no encoder setting here takes
            raise OutputError(f"cannot write {self.path}: {exc}") from exc
        finally:
            self._discard()

    def abort(self) -> None:
        """Stop and remove the temp file; ``path`` is left as it was."""
        if self._ended:
            return
        self._ended = True
        self._error = self._error or InputError("aborted")
        self._queue.put(None)
        self._thread.join()
        self._discard()

    def _discard(self) -> None:
        if self._audio is not None:
            self._audio.input.close()
        try:
            self._container.close()
        except Exception:  # the container may be half-written; it is deleted anyway
            pass
        self._tmp.unlink(missing_ok=True)


class _GifPalette:
    """FFmpeg's palettegen + paletteuse: a palette of 256 colours chosen for each frame
    (the fixed 3-3-2 bit palette bands faces and gradients badly)."""

    def __init__(self, height: int, width: int):
        graph = av.filter.Graph()
        source = graph.add_buffer(width=width, height=height, format="rgb24",
                                  time_base=Fraction(1, GIF_TICKS_PER_S))
        split = graph.add("split")
        palette = graph.add("palettegen", "stats_mode=single:reserve_transparent=0")
        use = graph.add("paletteuse", "new=1:dither=sierra2_4a")
        sink = graph.add("buffersink")
        source.link_to(split)
        split.link_to(use, 0, 0)
        split.link_to(palette, 1, 0)
        palette.link_to(use, 0, 1)
        use.link_to(sink)
        graph.configure()
        self.graph = graph

    def convert(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        self.graph.push(frame)
        ready = []
        while True:
            try:
                out = self.graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return ready
            out.pts, out.time_base = frame.pts, frame.time_base
            ready.append(out)


class _AudioCopy:
    """Remux (or, for codecs the container cannot hold, transcode) a video's first audio
    stream: the part heard from ``start_s`` (the first video frame's time: recordings and
    MPEG-TS streams seldom start at 0) on, moved to start with the output's first frame."""

    def __init__(self, source: Path, output, output_format: OutputFormat, start_s: float):
        self.input = av.open(av_path(source))
        self.output = output
        self.audio = self.input.streams.audio[0] if self.input.streams.audio else None
        self.stream = None
        self.start_s = Fraction(start_s).limit_denominator(MAX_RATE_DENOMINATOR)
        if self.audio is None:
            return
        # by codec id: the decoder's name can differ from the format's ("mp3float" for mp3)
        self.remux = self.audio.codec_context.codec.id in _codec_ids(output_format.audio_copy)
        if self.remux:
            self.stream = output.add_stream_from_template(self.audio)
        else:
            codec = output_format.audio_codec
            # mono stays mono; more than two channels are mixed down to stereo, which every
            # player and both encoders take
            layout = "mono" if self.audio.channels == 1 else "stereo"
            self.stream = output.add_stream(codec, rate=_encoder_rate(codec, self.audio.rate),
                                            layout=layout)

    def copy(self, duration: Fraction) -> None:
        """Write ``duration`` seconds of audio, so both streams end together. Packets that end
        before the first frame are left out, except the encoder's priming ones (negative
        times, which end where the audio starts)."""
        if self.audio is None:
            return
        if self.remux:
            self._remux(self.start_s + duration)
        else:
            self._transcode(self.start_s + duration)

    def _remux(self, end_s: Fraction) -> None:
        time_base = self.audio.time_base
        shift = round(self.start_s / time_base)
        for packet in self.input.demux(self.audio):
            if packet.dts is None or packet.pts is None or packet.is_corrupt:
                continue  # a flush packet, or the torn last one of a cut download
            if packet.pts * time_base >= end_s:
                break
            if (packet.pts + (packet.duration or 0)) * time_base < self.start_s:
                continue
            packet.pts, packet.dts = packet.pts - shift, packet.dts - shift
            packet.stream = self.stream
            self.output.mux(packet)

    def _transcode(self, end_s: Fraction) -> None:
        for frame in self.input.decode(self.audio):
            if frame.time is None:
                continue
            if frame.time >= end_s:
                break
            if frame.time + frame.samples / frame.sample_rate < self.start_s:
                continue
            # the time it is heard, counted from the first frame (the encoder resamples)
            frame.pts = round((Fraction(frame.time).limit_denominator(MAX_RATE_DENOMINATOR)
                               - self.start_s) * frame.sample_rate)
            frame.time_base = Fraction(1, frame.sample_rate)
            self.output.mux(self.stream.encode(frame))
        self.output.mux(self.stream.encode(None))


def _codec_ids(names: frozenset) -> set[int]:
    return {av.Codec(name, "r").id for name in names}


def _encoder_rate(codec: str, rate: int) -> int:
    """The sample rate to encode at: ``rate`` when the encoder takes it, else the nearest it
    does (AAC stops at 96 kHz; libopus takes five rates and resamples to 48 kHz inside)."""
    if codec == "libopus":
        return OPUS_RATE_HZ
    rates = av.Codec(codec, "w").audio_rates
    return rate if not rates or rate in rates else min(rates, key=lambda r: abs(r - rate))
