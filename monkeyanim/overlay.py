"""The keypoints job: the learned keypoints drawn over a video or an image, and every
frame's keypoints as JSON."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from .errors import InputError
from .files import atomic_write, check_output
from .framing import crop_mode, frame_batches, video_crops
from .jobs import JobResult, reader_warnings, write_image
from .models import Keypoints, MonkeyNet
from .video import (BATCH_FRAMES, IMAGE_OUTPUTS, Progress, VideoReader, centred_square,
                    first_frames, open_video)
from .videowriter import VIDEO_OUTPUTS, VideoWriter

DRAW_MIN_SIZE_PX = 256  # keypoint overlays are drawn at least this large to stay readable
DRAW_SHIFT_BITS = 4  # dots and ellipses placed to 1/16 of a drawn pixel
JSON_DIGITS = 7  # significant digits of the keypoints in JSON: what a float32 holds
JSON_SPOOL_BYTES = 8 << 20  # frames' JSON kept in memory up to this, then in a temp file


def _colours(count: int) -> list[tuple[int, int, int]]:
    hues = np.linspace(0, 179, count, endpoint=False).astype(np.uint8)
    hsv = np.stack([hues, np.full(count, 230, np.uint8), np.full(count, 255, np.uint8)], axis=1)
    rgb = cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]
    return [tuple(int(c) for c in colour) for colour in rgb]


def model_to_pixels(mean: np.ndarray, size: int, length: float) -> np.ndarray:
    """Keypoint coordinates in [-1, 1] of a model frame ``size`` pixels long (the model's grid
    has -1 and 1 at the centres of its first and last pixels) -> pixel coordinates on the
    same span resized to ``length`` pixels, pixel centres at whole numbers (as OpenCV draws
    and cv2.resize maps them)."""
    return ((mean + 1) / 2 * (size - 1) + 0.5) * (length / size) - 0.5


def draw_keypoints(frame: np.ndarray, kp: Keypoints) -> np.ndarray:
    """Each keypoint as a dot and its 1-sigma covariance ellipse, one colour per keypoint;
    frame (H, W, 3) uint8 at the model's size, kp for it: mean (K, 2), covar (K, 2, 2).
    Drawn on the frame enlarged to DRAW_MIN_SIZE_PX high at least."""
    height, width = frame.shape[:2]
    scale = max(DRAW_MIN_SIZE_PX, height) / height  # drawn pixels per model pixel
    canvas = cv2.resize(frame, (round(width * scale), round(height * scale)),
                        interpolation=cv2.INTER_CUBIC)  # (sH, sW, 3)
    means = kp.mean.float().cpu().numpy()  # (K, 2), x first
    centres = np.stack([model_to_pixels(means[:, 0], width, canvas.shape[1]),
                        model_to_pixels(means[:, 1], height, canvas.shape[0])], axis=1)
    # drawn pixels per unit of [-1, 1], along x and y: the covariance in drawn pixels
    units = np.diag([(width - 1) / 2 * scale, (height - 1) / 2 * scale])  # (2, 2)
    fixed = 1 << DRAW_SHIFT_BITS  # OpenCV draws at fractional positions in fixed point
    for k, colour in enumerate(_colours(len(means))):
        centre = tuple(int(v) for v in np.rint(centres[k] * fixed))
        if kp.covar is not None and kp.covar.shape[-1] == 2:
            covar = units @ kp.covar[k].float().cpu().numpy() @ units  # (2, 2)
            values, vectors = np.linalg.eigh(covar)
            axes = np.maximum(np.sqrt(np.clip(values, 0, None)), 1) * fixed
            angle = float(np.degrees(np.arctan2(vectors[1, 1], vectors[0, 1])))
            cv2.ellipse(canvas, centre, (int(axes[1]), int(axes[0])), angle, 0, 360, colour, 1,
                        cv2.LINE_AA, DRAW_SHIFT_BITS)
        cv2.circle(canvas, centre, max(2, canvas.shape[0] // 80) * fixed, colour, -1,
                   cv2.LINE_AA, DRAW_SHIFT_BITS)
    return canvas


def keypoints_file(model: MonkeyNet, video: str | Path, output: str | Path | None,
                   json_path: str | Path | None = None, batch_size: int = BATCH_FRAMES,
                   crop=None, progress: Progress | None = None) -> JobResult:
    """Draw the learned keypoints over ``video`` (or an image) into ``output`` (any of
    VIDEO_OUTPUTS, or an image: png, jpg, which shows the first frame; None: no drawing) and
    optionally write every frame's means, covariances and crop box as JSON."""
    start = time.perf_counter()
    output, json_path = _check_outputs(output, json_path)
    as_image = output is not None and output.suffix.lower() in IMAGE_OUTPUTS
    reader = open_video(video)
    crop_at, detector, crop_notes = video_crops(reader, crop_mode(crop, model))
    height, width = first_frames(reader, 1)[0].shape[:2]
    # each frame's JSON as it comes, spilled to disk past a few MB: memory flat in the
    # video's length (a list of dicts held 4.4 KB a frame, 11 times the JSON)
    tracks = tempfile.SpooledTemporaryFile(JSON_SPOOL_BYTES, "w+")
    done = 0
    with tracks, nullcontext() if as_image or output is None else \
            VideoWriter(output, reader.fps) as writer:
        for frames, batch in frame_batches(reader, model.config.frame_size, batch_size, crop_at,
                                           model.device):
            kp = model.keypoints(batch)
            for i, frame in enumerate(frames):
                box = crop_at(done) or centred_square(height, width)
                tracks.write((", " if done else "") + _frame_record(kp[i], box))
                done += 1
                if writer is not None:
                    writer.write(draw_keypoints(frame, kp[i]))
                elif as_image and done == 1:
                    write_image(output, draw_keypoints(frame, kp[i]))
            first_only = as_image and json_path is None  # the first frame is all it needs
            if progress:
                progress(min(done, 1) if first_only else done,
                         1 if first_only else reader.expected_frames)
            if first_only:
                break
        if json_path is not None:
            _write_keypoints_json(json_path, video, reader, model, (height, width), detector,
                                  tracks)
    return JobResult(output or json_path, 1 if as_image else done,
                     time.perf_counter() - start,
                     {"detector": detector},
                     crop_notes + reader_warnings(reader, read_all=not as_image))


def _check_outputs(output: str | Path | None, json_path: str | Path | None
                   ) -> tuple[Path | None, Path | None]:
    """keypoints_file's drawing and JSON as paths, their folders checked before any work
    (one at least; an existing file is replaced: --overwrite is the CLI's call)."""
    if output is None and json_path is None:
        raise InputError("keypoints_file writes a drawing, a JSON or both: neither was named")
    output, json_path = (None if path is None else Path(path) for path in (output, json_path))
    if output is not None:
        check_output(output, True, VIDEO_OUTPUTS + IMAGE_OUTPUTS)
    if json_path is not None:
        check_output(json_path, True)  # its folder, before the drawing is written
    return output, json_path


def _frame_record(kp: Keypoints, box: tuple[int, int, int, int]) -> str:
    """One frame's entry of the JSON: its keypoints (K, ...) and crop box in the video."""
    return json.dumps({"mean": _significant(kp.mean.tolist()), "crop": list(box),
                       "covar": None if kp.covar is None else _significant(kp.covar.tolist())})


def _significant(values: list | float, digits: int = JSON_DIGITS) -> list | float:
    """Nested lists of floats rounded to ``digits`` significant digits (float32 holds 7;
    printed whole, each is a float64's 17 and the JSON twice the size)."""
    if isinstance(values, list):
        return [_significant(v, digits) for v in values]
    return float(f"{values:.{digits}g}")


def _write_keypoints_json(path: Path, video, reader: VideoReader, model: MonkeyNet,
                          video_size: tuple[int, int], detector: str | None, tracks) -> None:
    """``video_size``: the video's (height, width) in pixels, as frame_size is (h, w);
    ``tracks``: a text file holding the frames' entries, comma-separated."""
    document = {"video": str(video), "fps": float(reader.fps), "num_kp": model.config.num_kp,
                "frame_size": list(model.config.frame_size), "video_size": list(video_size),
                "crop_detector": detector,  # the face detector that placed the crops
                "coordinates": "mean in [-1, 1] of the frame's crop box (x, y, w, h in the "
                               "pixels of the video, video_size (h, w)) resized to frame_size "
                               "(h, w), x first, -1 and 1 at the centres of its first and "
                               "last pixels: pixel x = crop x + ((mean x + 1) / 2 * (w - 1) + "
                               "0.5) * crop w / w - 0.5, pixel centres at whole numbers; covar "
                               "in the units of mean"}
    head = json.dumps(document)[:-1] + ', "frames": ['  # the frames last, as they come

    def write(tmp: Path) -> None:
        with open(tmp, "w") as out:
            out.write(head)
            tracks.seek(0)
            shutil.copyfileobj(tracks, out)
            out.write("]}")
    atomic_write(path, write)
