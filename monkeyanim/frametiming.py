"""When each frame shows: frame rates from stored durations; frames that encoders merged into
longer ones (a still moment stored once) given back as the frame times they stand for; and
variable frame rates placed on a steady one by their timestamps."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np

DEFAULT_FPS = Fraction(25)  # for frame strips and folders of frames, which carry no rate
MS_PER_S = 1000  # animated WebP and PNG state each frame's duration in milliseconds
MAX_RATE_DENOMINATOR = 100_000  # rates such as 30000/1001 stay exact
MAX_RESTORED_FPS = 60  # frames merged into longer ones are restored up to this frame rate


def frame_timing(durations: list[int], ticks_per_s: int | Fraction
                 ) -> tuple[list[int], Fraction]:
    """How many frame times each frame lasts, and the frame rate, from each frame's duration
    in whole ticks (ms for WebP and PNG, hundredths for GIF). Encoders merge a run of (nearly)
    identical frames into one that lasts as long (libwebp does, as do gif optimisers): when
    every duration is, to a tick, a whole number of one frame time, the runs are restored and
    the motion keeps its timing; otherwise each frame counts once, shown evenly at the mean
    rate, as they are when that frame time would make a rate above MAX_RESTORED_FPS (the
    shortest frame is then a short one, not one of a steady rate). Frames without a
    duration: each once, at the others' mean rate."""
    timed = [d for d in durations if d > 0]
    if len(timed) < len(durations) or not timed:
        return [1] * len(durations), (_rate_from(sum(timed), len(timed), ticks_per_s)
                                      if timed else DEFAULT_FPS)
    shortest = min(durations)
    repeats = [max(1, round(d / shortest)) for d in durations]
    frame_ticks = sum(durations) / sum(repeats)
    if (any(abs(d - k * frame_ticks) > 1 for d, k in zip(durations, repeats))
            or ticks_per_s > MAX_RESTORED_FPS * frame_ticks):
        repeats = [1] * len(durations)
    return repeats, _rate_from(sum(durations), sum(repeats), ticks_per_s)


def _rate_from(total_ticks: int, frames: int, ticks_per_s: int | Fraction) -> Fraction:
    """The frame rate of smallest denominator (nearest the mean among those) whose frames,
    their times rounded to whole ticks, last these ``frames`` what they last in all to a
    tick: 12 fps is stored as 83, 83, 84 ms..., which read back as 12, not 12.012 (and 12 cs
    a frame as 25/3, not 8: within half a tick of each frame, but 49 ticks off over 99).
    Ticks finer than a millisecond (mp4's) state rates such as 30000/1001 exactly: their
    mean is the rate."""
    mean = Fraction(ticks_per_s * frames, total_ticks)
    if ticks_per_s > MS_PER_S:
        return mean.limit_denominator(MAX_RATE_DENOMINATOR)
    slack = min(1.0, frames / 2)  # ticks over the whole: one frame, half a tick
    slowest = ticks_per_s * frames / (total_ticks + slack)
    fastest = ticks_per_s * frames / max(total_ticks - slack, 0.5)
    for denominator in range(1, 1001):
        low, high = math.ceil(slowest * denominator), math.floor(fastest * denominator)
        if low <= high:
            return Fraction(min(max(round(mean * denominator), low), high), denominator)
    return mean


def restored_timing(container, stream) -> tuple[int, Fraction, float, float] | None:
    """The frame count (an estimate), the rate at which a video's frames are to be placed by
    their timestamps (see restore_runs), the longest any one shows and the longest any but
    the last shows (a gap to the next frame; seconds), from its packets' timestamps, read
    without decoding;
    None for a video of constant rate in fine ticks (most: mp4's), read frame by frame as
    stored at the rate its header states. Three kinds are placed: frames that last whole
    numbers of one frame time (gifs with still runs merged; mp4s that leave out repeated
    frames, as 2 of the 39 real face videos do), at that frame time (see frame_timing); a
    variable rate (phones in low light, screen recordings), at the rate of its typical
    frames (those within a tick of the median), so that the motion keeps in step with the
    audio; and a constant rate in coarse ticks (a gif's hundredths store 30 fps as 30, 30,
    40 ms; FFmpeg's header rate is then the commonest delay's, 33.3 fps), at its mean rate."""
    base = stream.time_base
    try:
        packets = sorted((packet.pts, packet.duration or 0) for packet in container.demux(stream)
                         if packet.size and packet.pts is not None)  # presentation order
    except av.FFmpegError:  # damaged further on: decoding will say so where it is
        return None
    if base is None or len(packets) < 2:
        return None
    durations = [b - a for (a, _), (b, _) in zip(packets, packets[1:])]
    durations.append(_last_duration(packets[-1], min(durations), stream))
    repeats, fps = frame_timing(durations, 1 / base)
    longest_s, gap_s = float(max(durations) * base), float(max(durations[:-1]) * base)
    if max(repeats) > 1:
        return sum(repeats), fps, longest_s, gap_s
    typical = statistics.median(durations)
    if typical <= 0:
        return None
    if all(abs(d - typical) <= 1 for d in durations):  # a constant rate, to a tick
        if len(set(durations)) == 1 or 1 / base > MS_PER_S or _header_fits(stream, durations):
            return None
        return len(durations), fps, longest_s, gap_s  # 30, 30, 40 ms: 30 fps, not 33.3
    steady = [d for d in durations if abs(d - typical) <= 1] or durations
    fps = _rate_from(sum(steady), len(steady), 1 / base)
    if fps > MAX_RESTORED_FPS:
        return None
    return max(1, round(sum(durations) * base * fps)), fps, longest_s, gap_s


def _header_fits(stream, durations: list[int]) -> bool:
    """Whether the rate the stream's header states gives its frames their whole duration,
    to within half a frame (29.97 fps in mkv's milliseconds, 33, 33, 34...: exact, where
    the mean of whole milliseconds would round it to 30)."""
    header = stream.average_rate or stream.guessed_rate
    if not header:
        return False
    total_s = sum(durations) * stream.time_base
    return abs(len(durations) / header - total_s) <= Fraction(1, 2) / header


def _last_duration(last: tuple[int, int], fallback: int, stream) -> int:
    """How long the last frame in presentation order shows, in ticks: its packet's duration,
    else ``fallback``, and never past the end the stream states. (With B-frames, an mp4's
    durations are those of decoding order: the last frame shown may carry another's, a
    gap of seconds that would hold it that long.)"""
    pts, duration = last
    duration = duration or fallback
    if stream.duration:
        stated_end = stream.duration + (stream.start_time or 0)
        if stated_end > pts:
            duration = min(duration, stated_end - pts)
    return duration


def restore_runs(decoded: Iterator[tuple], frame_s: Fraction,
                 end_s: float | None = None) -> Iterator[np.ndarray]:
    """Frames every ``frame_s`` seconds from decoded (frame, start_s, end_s): output frame n
    is the frame shown at n * frame_s after the first one's start, so a frame is repeated for
    the frame times it covers and one shorter than half a frame time may be left out (never
    the last of all). One without a time passes once. Holds one frame back: its length is
    known at the next one. ``end_s``: where the video states it ends, which the last frame
    does not outlast (see _last_duration)."""
    held, held_start, held_end, first, emitted = None, None, None, None, 0
    for frame, start_s, end_s_of_frame in decoded:
        if held is not None:
            count = _frames_until(start_s, first, frame_s, emitted)
            yield from [held] * count
            emitted += count
        if first is None:
            first = start_s
        held, held_start, held_end = frame, start_s, end_s_of_frame
    if held is None:
        return
    if None not in (end_s, held_start, held_end) and held_start < end_s:
        held_end = min(held_end, end_s)
    yield from [held] * max(1, _frames_until(held_end, first, frame_s, emitted))


def _frames_until(time_s: float | None, first_s: float | None, frame_s: Fraction,
                  emitted: int) -> int:
    """How many copies of a frame fill the output up to ``time_s``: none when the output is
    already there, one when either time is unknown."""
    if time_s is None or first_s is None:
        return 1
    return max(0, round((time_s - first_s) / float(frame_s)) - emitted)
