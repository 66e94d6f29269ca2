"""One job = one output file: read inputs (video.py), run the pipeline, write (video.py).

No printing here: progress is reported through a callback ``progress(frames_done)``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .files import atomic_write
from .errors import InputError
from .models import Keypoints, MonkeyNet
from .pipeline import Animator, best_frame, driving_keypoints, reconstruct, to_tensor, to_uint8
from .video import VideoReader, VideoWriter, fit_frame, open_video, prefetch, read_image, read_source

Progress = Callable[[int], None]
DRAW_MIN_SIZE_PX = 256  # keypoint overlays are drawn at least this large to stay readable


@dataclass
class AnimateSettings:
    mode: str = "relative"
    adapt_scale: bool = False
    find_best_frame: bool = False
    side_by_side: bool = False
    fps: float | None = None
    size: int | None = None  # output side in pixels; default: the model's frame size
    batch_size: int = 16
    precision: str = "fp32"
    crop: tuple[int, int, int, int] | None = None  # applies to the source and the driving video


@dataclass
class JobResult:
    output: Path
    frames: int
    seconds: float
    extra: dict = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def frame_batches(reader: VideoReader, size: tuple[int, int], batch_size: int,
                  crop=None, device="cpu") -> Iterator[tuple[list[np.ndarray], torch.Tensor]]:
    """Decoded (in a background thread), fitted frames in batches: (list of (H, W, 3) uint8,
    tensor (B, 3, H, W))."""
    if batch_size < 1:
        raise InputError("--batch-size must be at least 1")
    fitted = (fit_frame(frame, size, crop) for frame in reader.frames())
    batch: list[np.ndarray] = []
    for frame in prefetch(fitted):
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch, to_tensor(batch, device)
            batch = []
    if batch:
        yield batch, to_tensor(batch, device)


def _resize_all(frames: np.ndarray, side: int | None) -> list[np.ndarray]:
    if side is None or frames.shape[1] == side:
        return list(frames)
    return [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in frames]


def animate_file(model: MonkeyNet, source: Path, driving: Path, output: Path,
                 settings: AnimateSettings, progress: Progress | None = None) -> JobResult:
    """Animate ``source`` with ``driving``'s motion into ``output`` (mp4 or gif)."""
    start = time.perf_counter()
    size = model.config.frame_size
    source_frame = fit_frame(read_source(source), size, settings.crop)
    reader = open_video(driving)
    batches = lambda: frame_batches(reader, size, settings.batch_size, settings.crop, model.device)
    source_tensor = to_tensor([source_frame], model.device)[0]
    animator = Animator(model, source_tensor, settings.mode, settings.adapt_scale,
                        precision=settings.precision)
    best = None
    if settings.find_best_frame and settings.mode == "relative":
        # A first pass finds keypoints only; animating every frame relative to the best one
        # is the same as animating forward and backward from it.
        kp_all = driving_keypoints(model, (b for _, b in batches()), settings.precision)
        best = best_frame(animator.kp_source, kp_all)
        animator.kp_first = kp_all[best:best + 1]
    keep_audio = reader.has_audio and settings.fps is None
    done = 0
    with VideoWriter(output, settings.fps or reader.fps,
                     audio_from=reader.path if keep_audio else None) as writer:
        for frames, batch in batches():
            result = _resize_all(to_uint8(animator(batch)), settings.size)
            if settings.side_by_side:
                drive = _resize_all(np.stack(frames), settings.size)
                still = _resize_all(source_frame[None], settings.size)[0]
                result = [np.concatenate([d, still, r], axis=1) for d, r in zip(drive, result)]
            for frame in result:
                writer.write(frame)
            done += len(frames)
            if progress:
                progress(done)
    return JobResult(output, done, time.perf_counter() - start,
                     {"best_frame": best, "audio": keep_audio})


def reconstruct_file(model: MonkeyNet, video: Path, output: Path | None, batch_size: int = 16,
                     precision: str = "fp32", crop=None,
                     progress: Progress | None = None) -> JobResult:
    """The paper's reconstruction of ``video``; extra['l1'] is the mean absolute error per
    pixel in [0, 1], averaged over frames."""
    start = time.perf_counter()
    reader = open_video(video)
    batches = frame_batches(reader, model.config.frame_size, batch_size, crop, model.device)
    real_batches: list[torch.Tensor] = []

    def remember():
        for _, batch in batches:
            real_batches.append(batch)
            yield batch

    total, done = 0.0, 0
    writer = VideoWriter(output, reader.fps) if output is not None else None
    try:
        for predicted in reconstruct(model, remember(), precision):
            real = real_batches.pop(0)
            total += (predicted.float() - real).abs().mean(dim=(1, 2, 3)).sum().item()
            done += len(real)
            if writer is not None:
                for frame in to_uint8(predicted):
                    writer.write(frame)
            if progress:
                progress(done)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    return JobResult(output, done, time.perf_counter() - start, {"l1": total / done})


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


def keypoints_file(model: MonkeyNet, video: Path, output: Path, json_path: Path | None = None,
                   batch_size: int = 16, crop=None, progress: Progress | None = None) -> JobResult:
    """Draw the learned keypoints over ``video`` (or an image) into ``output`` (mp4, gif or png)
    and optionally write their per-frame means and covariances as JSON."""
    start = time.perf_counter()
    reader = open_video(video)
    as_image = output.suffix.lower() in (".png", ".jpg", ".jpeg")
    tracks, done = [], 0
    writer = None if as_image else VideoWriter(output, reader.fps)
    try:
        for frames, batch in frame_batches(reader, model.config.frame_size, batch_size, crop,
                                           model.device):
            kp = model.keypoints(batch)
            for i, frame in enumerate(frames):
                drawn = draw_keypoints(frame, kp[i])
                tracks.append({"mean": kp.mean[i].tolist(),
                               "covar": None if kp.covar is None else kp.covar[i].tolist()})
                if as_image:
                    _write_image(output, drawn)
                    break
                writer.write(drawn)
            done += len(frames)
            if progress:
                progress(done)
            if as_image:
                break
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    if writer is not None:
        writer.close()
    if json_path is not None:
        document = {"video": str(video), "fps": float(reader.fps), "num_kp": model.config.num_kp,
                    "frame_size": list(model.config.frame_size),
                    "coordinates": "mean in [-1, 1], x first; covar in the same units",
                    "frames": tracks}
        atomic_write(json_path, lambda tmp: tmp.write_text(json.dumps(document)))
    return JobResult(output, done, time.perf_counter() - start)


def _write_image(path: Path, frame: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"cannot encode {path}")
        tmp.write_bytes(data.tobytes())
    atomic_write(path, write)

