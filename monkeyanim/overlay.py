"""The keypoints job: the learned keypoints drawn over a video or an image, and every
frame's keypoints as JSON."""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from .files import atomic_write, check_output
from .jobs import JobResult, crop_mode, frame_batches, reader_warnings, video_crops, write_image
from .models import Keypoints, MonkeyNet
from .video import (BATCH_FRAMES, IMAGE_OUTPUTS, Progress, VideoReader, centred_square,
                    first_frames, open_video)
from .videowriter import VIDEO_OUTPUTS, VideoWriter

DRAW_MIN_SIZE_PX = 256  # keypoint overlays are drawn at least this large to stay readable
JSON_DIGITS = 7  # significant digits of the keypoints in JSON: what a float32 holds


def _colours(count: int) -> list[tuple[int, int, int]]:
    hues = np.linspace(0, 179, count, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full(count, 230, np.uint8), np.full(count, 255, np.uint8)], axis=1)
    rgb = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    return [tuple(int(c) for c in colour) for colour in rgb]


def draw_keypoints(frame: np.ndarray, kp: Keypoints) -> np.ndarray:
    """Each keypoint as a dot and its 1-sigma covariance ellipse, one colour per keypoint;
    kp for one frame: mean (K, 2), covar (K, 2, 2)."""
    side = max(DRAW_MIN_SIZE_PX, frame.shape[0])
    canvas = cv2.resize(frame, (side, side), interpolation=cv2.INTER_CUBIC).copy()
    half = (side - 1) / 2  # [-1, 1] -> pixels
    means = kp.mean.float().cpu().numpy()
    for k, colour in enumerate(_colours(len(means))):
        centre = ((means[k] + 1) * half).round().astype(int)
        if kp.covar is not None and kp.covar.shape[-1] == 2:
            values, vectors = np.linalg.eigh(kp.covar[k].float().cpu().numpy())
            axes = np.sqrt(np.clip(values, 0, None)) * half
            angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
            cv2.ellipse(canvas, tuple(int(v) for v in centre),
                        (max(1, int(axes[1])), max(1, int(axes[0]))), angle, 0, 360, colour, 1,
                        cv2.LINE_AA)
        cv2.circle(canvas, tuple(int(v) for v in centre), max(2, side // 80), colour, -1,
                   cv2.LINE_AA)
    return canvas


def keypoints_file(model: MonkeyNet, video: str | Path, output: str | Path,
                   json_path: str | Path | None = None, batch_size: int = BATCH_FRAMES,
                   crop=None, progress: Progress | None = None) -> JobResult:
    """Draw the learned keypoints over ``video`` (or an image) into ``output`` (any of
    VIDEO_OUTPUTS, or an image: png, jpg, which shows the first frame) and optionally write
    every frame's means, covariances and crop box as JSON."""
    start = time.perf_counter()
    output, json_path = Path(output), None if json_path is None else Path(json_path)
    as_image = output.suffix.lower() in IMAGE_OUTPUTS
    check_output(output, True, VIDEO_OUTPUTS + IMAGE_OUTPUTS)  # (--overwrite: the CLI's call)
    if json_path is not None:
        check_output(json_path, True)  # its folder, before the drawing is written
    reader = open_video(video)
    crop_at, detector = video_crops(reader, crop_mode(crop, model))
    height, width = first_frames(reader, 1)[0].shape[:2]
    tracks: list[dict] = []
    with nullcontext() if as_image else VideoWriter(output, reader.fps) as writer:
        for frames, batch in frame_batches(reader, model.config.frame_size, batch_size, crop_at,
                                           model.device):
            kp = model.keypoints(batch)
            for i, frame in enumerate(frames):
                box = crop_at(len(tracks)) or centred_square(height, width)
                tracks.append({"mean": _significant(kp.mean[i].tolist()), "crop": list(box),
                               "covar": None if kp.covar is None
                               else _significant(kp.covar[i].tolist())})
                if not as_image:
                    writer.write(draw_keypoints(frame, kp[i]))
                elif len(tracks) == 1:
                    write_image(output, draw_keypoints(frame, kp[i]))
            first_only = as_image and json_path is None  # the first frame is all it needs
            if progress:
                progress(min(len(tracks), 1) if first_only else len(tracks),
                         1 if first_only else reader.expected_frames)
            if first_only:
                break
    if json_path is not None:
        _write_keypoints_json(json_path, video, reader, model, (width, height), detector, tracks)
    return JobResult(output, 1 if as_image else len(tracks), time.perf_counter() - start,
                     {"detector": detector}, reader_warnings(reader, read_all=not as_image))


def _significant(values: list | float, digits: int = JSON_DIGITS) -> list | float:
    """Nested lists of floats rounded to ``digits`` significant digits (float32 holds 7;
    printed whole, each is a float64's 17 and the JSON twice the size)."""
    if isinstance(values, list):
        return [_significant(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


def _write_keypoints_json(path: Path, video, reader: VideoReader, model: MonkeyNet,
                          source_size: tuple[int, int], detector: str | None,
                          tracks: list[dict]) -> None:
    document = {"video": str(video), "fps": float(reader.fps), "num_kp": model.config.num_kp,
                "frame_size": list(model.config.frame_size), "source_size": list(source_size),
                "crop_detector": detector,  # the face detector that placed the crops
                "coordinates": "mean in [-1, 1] of the frame's crop box (x, y, w, h in the "
                               "video's pixels), x first: pixel x = crop x + (mean x + 1) / 2 "
                               "* crop w; covar in the units of mean",
                "frames": tracks}
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(document)))
