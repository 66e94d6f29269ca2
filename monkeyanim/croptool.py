"""Cut face clips out of raw videos for training: find face tracks, split them at shot changes
and track breaks, and write one square clip per long-enough track plus a CSV of what came from
where (in the spirit of the authors' crop tool)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .faces import TRACK_DETECT_EVERY, Box, crop_box, fit_square, iou, largest, nearest
from .files import already_there, atomic_write
from .shots import ShotChanges
from .video import Progress, fit_frame, open_video
from .videowriter import VideoWriter

TRACK_MIN_IOU = 0.3  # a face box overlapping the previous one less than this starts a new track
# ... and one overlapping the track's first box less than this (as in the authors' crop tool):
# the face has moved or grown so far that one square over the whole track would frame it small
TRACK_MIN_IOU_FIRST = 0.25
# how far (in box sides) the square over a track may outgrow the frame, which then cuts it
# down: the face fills 1 / (1 + FACE_MARGIN) of its box, so the cut square still holds it
TRACK_MAX_OVERFLOW = 0.25
CSV_FIELDS = ["clip", "source", "start_frame", "end_frame", "start_s", "end_s", "x", "y", "w",
              "h", "fps", "detector"]


@dataclass
class Track:
    """One face followed over frames start..end, a box (x, y, w, h) per frame."""

    start: int
    end: int  # inclusive
    boxes: list[Box]

    def crop(self, height: int, width: int) -> Box:
        """One square covering every box of the track, kept inside the frame. The boxes are
        crop boxes already (margin added, shifted up to the forehead): none is added again."""
        x0, y0, x1, y1 = _union(self.boxes)
        return fit_square((x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0), height, width)

    def takes(self, box: Box, height: int, width: int) -> bool:
        """Whether ``box`` can join the track with its face still whole in the track's one
        square: near the first box, and the square over them all (nearly) inside the frame
        (a face panning across a wide frame needs several clips)."""
        x0, y0, x1, y1 = _union([*self.boxes, box])
        overflow = max(x1 - x0, y1 - y0) - min(height, width)  # pixels
        return (iou(box, self.boxes[0]) >= TRACK_MIN_IOU_FIRST
                and overflow <= TRACK_MAX_OVERFLOW * box[2])


def _union(boxes: list[Box]) -> tuple[int, int, int, int]:
    """The corners (x0, y0, x1, y1) of the smallest rectangle holding every (x, y, w, h) box."""
    xywh = np.array(boxes)  # (N, 4)
    x0, y0 = xywh[:, 0].min(), xywh[:, 1].min()
    x1, y1 = (xywh[:, 0] + xywh[:, 2]).max(), (xywh[:, 1] + xywh[:, 3]).max()
    return int(x0), int(y0), int(x1), int(y1)


def find_tracks(frames, detector, every: int = TRACK_DETECT_EVERY
                ) -> tuple[list[Track], tuple, int]:
    """Face tracks of a video: a track ends at a shot change, when the face is lost for more
    than one detection, when it jumps, or when it has moved too far for one square to frame
    it well. Returns (tracks, frame shape, frame count)."""
    tracker, shot_changes = _Tracker(), ShotChanges()
    shape, count = None, 0
    for index, frame in enumerate(frames):
        count, shape = index + 1, frame.shape
        cut = shot_changes(frame)
        if cut:
            tracker.close()
        if index % every and not cut:
            tracker.extend(index)
            continue
        faces = detector(frame)  # the face under way is followed (see faces.FaceFollower)
        face = (largest(faces) if tracker.current is None else nearest(faces, tracker.face))
        if face is None:
            tracker.missed(index)
        else:
            tracker.found(index, crop_box(face, *frame.shape[:2]), frame.shape[:2])
            tracker.face = face
    tracker.close()
    return tracker.tracks, shape, count


class _Tracker:
    """The tracks so far and the one under way, fed frame by frame by find_tracks."""

    def __init__(self) -> None:
        self.tracks: list[Track] = []
        self.current: Track | None = None
        self.seen = 0  # the frame of the current track's latest detection
        self.misses = 0  # detections in a row that found no face
        self.missed_at = 0  # the first of them
        # the current track's face as last detected (its crop box, with margin and clamped
        # to the frame, may be centred far from it)
        self.face: Box | None = None

    def extend(self, index: int) -> None:
        """A frame without a detection joins the track under way."""
        if self.current is not None:
            self.current.end = index

    def missed(self, index: int) -> None:
        self.misses, self.missed_at = self.misses + 1, self.missed_at if self.misses else index
        if self.misses > 1:
            self.close()

    def found(self, index: int, box: Box, frame_size: tuple[int, int]) -> None:
        self.misses, current = 0, self.current
        if current is not None and iou(box, current.boxes[-1]) < TRACK_MIN_IOU:
            self.close()
        elif current is not None and not current.takes(box, *frame_size):
            # the face moved on: the frames between the two detections go to the nearer one
            current.end = (self.seen + index) // 2
            self.close()
            self.current = Track(current.end + 1, index, [])
        if self.current is None:
            self.current = Track(index, index, [])
        self.current.boxes.append(box)
        self.current.end, self.seen = index, index

    def close(self) -> None:
        """End the track under way (at a shot change, a lost face or the video's end)."""
        if self.current is None:
            return
        if self.misses:  # the face is gone from the first missed detection on
            self.current.end = self.missed_at - 1
        self.tracks.append(self.current)
        self.current = None


def crop_video(video: Path, out_dir: Path, detector, size: int, min_frames: int,
               overwrite: bool = False, progress: Progress | None = None
               ) -> tuple[list[dict], int]:
    """Write the face clips of one video; returns one CSV row per clip and the video's frame
    count. The video is read twice (find the tracks, then cut them);
    ``progress(frames_done, total)`` counts both passes."""
    first = out_dir / f"{video.stem}_000.mp4"
    if first.exists() and not overwrite:  # before a pass over the whole video finds it again
        raise InputError(f"{first} already exists, cut from {video.name} before (use "
                         "--overwrite to cut it again)")
    reader = open_video(video)
    total = 2 * reader.expected_frames if reader.expected_frames else None
    tracks, shape, count = find_tracks(_counted(reader.frames(), progress, total), detector)
    keep = [t for t in tracks if t.end - t.start + 1 >= min_frames]
    rows, fps = [], float(reader.fps)
    if not keep:
        return rows, count
    boxes = [t.crop(shape[0], shape[1]) for t in keep]
    outputs = [out_dir / f"{video.stem}_{k:03d}.mp4" for k in range(len(keep))]
    for path in outputs:
        if path.exists() and not overwrite:
            raise InputError(already_there(path))
    _write_clips(_counted(reader.frames(), progress, total, count), reader.fps,
                 list(zip(keep, boxes, outputs)), size)
    for track, box, path in zip(keep, boxes, outputs):
        rows.append({"clip": path.name, "source": str(video.resolve()),  # (from anywhere)
                     "start_frame": track.start,
                     "end_frame": track.end, "start_s": round(track.start / fps, 3),
                     "end_s": round((track.end + 1) / fps, 3), "x": box[0], "y": box[1],
                     "w": box[2], "h": box[3], "fps": round(fps, 3), "detector": detector.name})
    return rows, count


def _counted(frames: Iterator[np.ndarray], progress: Progress | None, total: int | None,
             start: int = 0) -> Iterator[np.ndarray]:
    """The frames, reporting ``start`` + how many went by (and ``total``) after each."""
    for done, frame in enumerate(frames, start + 1):
        yield frame
        if progress:
            progress(done, total)


def _write_clips(frames: Iterator[np.ndarray], fps, clips: list[tuple[Track, Box, Path]],
                 size: int) -> None:
    """One pass over the video's frames writes every clip (a track's frames cut to its box);
    on any error (Ctrl-C too) the video's clips are removed, those under way and those
    finished, as clips.csv gets no row for them: a rerun cuts the video whole again."""
    writers, finished = {}, []
    try:
        for index, frame in enumerate(frames):
            for k, (track, box, path) in enumerate(clips):
                if track.start <= index <= track.end:
                    if k not in writers:
                        writers[k] = VideoWriter(path, fps)
                    writers[k].write(fit_frame(frame, (size, size), box))
                elif index > track.end and k in writers:
                    writers.pop(k).close()
                    finished.append(path)
        for k in list(writers):
            writers.pop(k).close()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        for path in finished:
            path.unlink(missing_ok=True)
        raise


def read_csv(path: Path) -> list[dict]:
    """The rows of a clips.csv (none where there is none); InputError for one that cannot
    be read, rather than replacing it by what this run cut."""
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return [row for row in csv.DictReader(handle) if row.get("clip")]
    except (UnicodeDecodeError, csv.Error, OSError) as exc:
        raise InputError(f"{path} cannot be read ({type(exc).__name__}): move it away, or "
                         "crop into another folder") from None


def cropped_before(folder: Path, videos: list[Path]) -> set[Path]:
    """Those of ``videos`` that clips.csv in ``folder`` says clips still there were cut from
    (its rows are written after each video's last clip): by path where the one it records
    is there, else by name (the folder moved since)."""
    rows = [row for row in read_csv(folder / "clips.csv")
            if row.get("source") and (folder / row["clip"]).is_file()]
    paths = {Path(row["source"]).resolve() for row in rows if Path(row["source"]).exists()}
    names = {Path(row["source"]).name for row in rows if not Path(row["source"]).exists()}
    return {video for video in videos if video.resolve() in paths or video.name in names}


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write clips.csv atomically, keeping an earlier run's rows whose clips are still there and
    were not cut again now, so that a rerun which adds videos (or fails on some) loses no
    record of what is in the folder."""
    new = {row["clip"] for row in rows}
    kept = [row for row in read_csv(path)
            if row["clip"] not in new and (path.parent / row["clip"]).is_file()]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(kept + rows)
    atomic_write(path, lambda tmp: tmp.write_text(buffer.getvalue()))
