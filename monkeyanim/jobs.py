"""One job = one output file: read inputs (video.py), run the pipeline, write (videowriter.py).
The keypoints job is in overlay.py.

No printing here: progress is reported through a callback ``progress(frames_done, total)``
(total: the frame count the container states, or None).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import torch

from .errors import InputError
from .faces import Box, parse_crop
from .files import atomic_write
from .framing import crop_mode, frame_batches, source_crop, video_crops
from .models import Keypoints, MonkeyNet
from .pipeline import (Animator, ReconstructionScores, best_driving_frame, check_mode,
                       check_precision, check_refine_steps, default_mode, reconstruct,
                       refine_batch_size, to_tensor, to_uint8)
from .video import (BATCH_FRAMES, VIDEO_SUFFIXES, Progress, VideoReader, check_batch_size,
                    first_frames, fit_frame, open_video, read_source_noted)
from .videowriter import OUTPUT_FORMATS, VideoWriter, check_output_options


# frames generated at a time from one source and its predicted keypoints (no decoding to
# overlap with, so a larger batch than animate's)
PREDICT_BATCH_FRAMES = 16
# an --fps this close to the driving video's rate, as a share of it, is that rate (29.97
# typed for 30000/1001 is 1e-6 off it; 29.97 for 30 is 1e-3 off, another rate)
SAME_RATE_SHARE = 1e-4


@dataclass
class AnimateSettings:
    """What `monkeyanim animate` was asked for, shared by every pair of a batch."""

    mode: str | None = None  # relative or absolute; None: the checkpoint's default_mode
    adapt_scale: bool = False
    find_best_frame: bool = False
    side_by_side: bool = False
    fps: float | None = None
    size: int | None = None  # output side in pixels; default: the model's frame size
    batch_size: int = BATCH_FRAMES
    precision: str = "fp32"
    crop: str | tuple[int, int, int, int] | None = None  # see parse_crop; source (and driving)
    paste_back: bool = False  # blend the result into the full-size source image
    refine_steps: int = 0  # fit the driving keypoints to the driving motion (KeypointRefiner)
    driving_crop: str | tuple[int, int, int, int] | None = None  # the driving's; None: crop's

    def __post_init__(self) -> None:
        """Each setting checked as the CLI checks its option (InputError); a crop given as
        text becomes its box."""
        if self.mode is not None:
            check_mode(self.mode)
        check_output_options(self.fps, self.size, self.paste_back, self.side_by_side)
        check_batch_size(self.batch_size)
        check_refine_steps(self.refine_steps)
        check_precision(self.precision)  # (whether it runs on the device: once loaded)
        self.crop = parse_crop(self.crop)
        self.driving_crop = parse_crop(self.driving_crop, "--driving-crop")

    def transfer(self, model: MonkeyNet) -> str:
        """The keypoint transfer ``model`` runs with these settings (the mode asked for, else
        its default_mode); InputError when an option of relative motion comes with absolute
        (it would change nothing, without a word)."""
        transfer = self.mode or default_mode(model)
        relative_only = [option for option, asked in (("--adapt-scale", self.adapt_scale),
                                                      ("--find-best-frame", self.find_best_frame))
                         if asked]
        if transfer == "absolute" and relative_only:
            why = ("" if self.mode else
                   f" ({model.provenance.get('name') or 'the checkpoint'}'s default)")
            works, them = ("work", "them") if len(relative_only) > 1 else ("works", "it")
            raise InputError(f"{' and '.join(relative_only)} {works} on relative motion, and the "
                             f"mode is absolute{why}: add --mode relative, or leave {them} out")
        return transfer


@dataclass
class JobResult:
    """One written output: frames made, wall seconds, and job-specific numbers (L1...)."""

    output: Path
    frames: int
    seconds: float
    extra: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # the output was written, but look

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def reader_warnings(reader: VideoReader, read_all: bool = True) -> list[str]:
    """What a job that read ``reader``'s frames (all of them, else the first) should tell the
    user."""
    notes = [reader.strip_note(), reader.hold_note() if read_all else None,
             reader.ended_early() if read_all else None]
    return [note for note in notes if note]


def _frame_at(batches: Iterator[tuple[list[np.ndarray], torch.Tensor]],
              index: int) -> torch.Tensor:
    """Frame ``index`` of a stream of batches: (3, H, W)."""
    for _, batch in batches:
        if index < len(batch):
            return batch[index]
        index -= len(batch)
    raise InputError(f"the driving video has no frame {index}")


def _resize_all(frames: np.ndarray, side: int | None) -> list[np.ndarray]:
    if side is None or frames.shape[1] == side:
        return list(frames)
    return [cv2.resize(f, (side, side), interpolation=cv2.INTER_CUBIC) for f in frames]


def _check_still_driving(reader: VideoReader, transfer: str, source: Path) -> None:
    """A still image, or a video of one frame, drives nothing in relative mode (its one frame
    is its own first frame); a video as SOURCE with one there means the two arguments were
    swapped."""
    if transfer != "relative":
        return
    if reader.kind == "image":
        what = "is a still image"
    elif len(first_frames(reader, 2)) == 1:
        what = "has a single frame"
    else:
        return
    hint = (" (the arguments look swapped: animate SOURCE_IMAGE DRIVING_VIDEO)"
            if source.suffix.lower() in VIDEO_SUFFIXES and reader.kind == "image" else
            ", or --mode absolute to pose the source like it")
    raise InputError(f"driving {reader.path} {what}, which moves nothing in relative mode: "
                     f"give a video, a frame strip or a folder of frames{hint}")


def animate_file(model: MonkeyNet, source: str | Path, driving: str | Path, output: str | Path,
                 settings: AnimateSettings | None = None,
                 progress: Progress | None = None) -> JobResult:
    """Animate image ``source`` with ``driving``'s motion (a video, animated image, frame strip
    or folder of frames) into ``output`` (any of VIDEO_OUTPUTS), as `monkeyanim animate` does;
    an existing ``output`` is replaced once the new file is complete."""
    start = time.perf_counter()
    source, driving, output = Path(source), Path(driving), Path(output)
    settings = settings or AnimateSettings()
    size = model.config.frame_size
    mode = crop_mode(settings.crop, model)
    transfer = settings.transfer(model)
    reader = open_video(driving)
    _check_still_driving(reader, transfer, source)
    whole = settings.paste_back or isinstance(settings.crop, tuple)  # a box: in its pixels
    source_image, box, detector, notes = _source(source, whole, mode)
    source_frame = fit_frame(source_image, size, box, f"the source {Path(source).name}")
    crop_at, _, crop_notes = video_crops(reader, mode if settings.driving_crop is None else
                                         crop_mode(settings.driving_crop, model))
    batch_size = refine_batch_size(settings.batch_size, settings.refine_steps)
    batches = lambda: frame_batches(reader, size, batch_size, crop_at, model.device)
    paste = PasteBack(source_image, box) if settings.paste_back else None
    source_tensor = to_tensor([source_frame], model.device)[0]
    animator = Animator(model, source_tensor, transfer, settings.adapt_scale,
                        precision=settings.precision, refine_steps=settings.refine_steps)
    best = (_align_to_best(model, animator, batches, settings)
            if settings.find_best_frame else None)
    fps = _new_rate(settings.fps, reader.fps)
    keep_audio = reader.has_audio and fps is None
    done = 0
    with VideoWriter(output, reader.fps if fps is None else fps,
                     audio_from=reader.path if keep_audio else None,
                     audio_start_s=reader.first_frame_s() if keep_audio else 0.0) as writer:
        for frames, batch in batches():
            result = _compose(to_uint8(animator(batch)), frames, source_frame, paste, settings)
            for frame in result:
                writer.write(frame)
            done += len(frames)
            if progress:
                progress(done, reader.expected_frames)
    return JobResult(output, done, time.perf_counter() - start,
                     {"best_frame": best, "audio": keep_audio, "detector": detector},
                     notes + crop_notes + reader_warnings(reader) + _sound_left_out(
                         reader, fps, output))


def _sound_left_out(reader: VideoReader, fps: float | None, output: Path) -> list[str]:
    """The warning for a driving video's sound left out of an output that could hold it:
    another frame rate than the video's own (29.97 for 30000/1001 keeps it)."""
    holds_sound = OUTPUT_FORMATS[output.suffix.lower()].audio_codec is not None
    if not (reader.has_audio and fps is not None and holds_sound):
        return []
    return [f"the driving video's sound is left out: --fps {fps:g} is not its rate "
            f"({float(reader.fps):.3f} fps), and the sound would not keep in step"]


def _source(source: Path, whole: bool, mode: str | Box | None
            ) -> tuple[np.ndarray, Box | None, str | None, list[str]]:
    """The source image (``whole``: never a strip's first frame, see read_source), its crop
    box for ``mode`` (see source_crop), the face detector that found it (None but for auto)
    and what the user should know of how the image was read and cropped."""
    image, note = read_source_noted(source, whole)
    box, detector, found = source_crop(image, mode, source)
    return image, box, detector, [line for line in (note, found) if line]


def _new_rate(asked: float | None, own: Fraction) -> float | None:
    """The --fps asked for, None where it is the driving video's own rate (typed as 29.97 for
    30000/1001, say): the timing is then the video's, and its sound kept."""
    if asked is None or abs(asked - float(own)) <= SAME_RATE_SHARE * float(own):
        return None
    return asked


def _align_to_best(model: MonkeyNet, animator: Animator, batches,
                   settings: AnimateSettings) -> int:
    """Make the driving frame whose pose is closest to the source's the reference of relative
    motion; returns its index. A first pass finds keypoints only: animating every frame
    relative to the best one is the same as animating forward and backward from it."""
    best, kp_best = best_driving_frame(model, animator.kp_source,
                                       (b for _, b in batches()), settings.precision)
    if settings.refine_steps:  # refinement rebuilds the others from that frame's picture
        animator.set_reference(_frame_at(batches(), best), kp_best)
    else:
        animator.kp_first = kp_best
    return best


def _compose(result: np.ndarray, driving: list[np.ndarray], source_frame: np.ndarray,
             paste: "PasteBack | None", settings: AnimateSettings) -> list[np.ndarray]:
    """The frames written for one batch: results at the output size, pasted back into the
    full source image, or beside the driving frames and the source (driving | source | result).

    result: (B, H, W, 3) uint8; driving: B frames (H, W, 3) uint8 at the model's size.
    """
    result = _resize_all(result, settings.size)
    if paste is not None:
        return [paste(frame) for frame in result]
    if not settings.side_by_side:
        return list(result)
    drive = _resize_all(np.stack(driving), settings.size)  # B x (S, S, 3)
    still = _resize_all(source_frame[None], settings.size)[0]  # (S, S, 3)
    return [np.concatenate([d, still, r], axis=1) for d, r in zip(drive, result)]  # (S, 3S, 3)


class PasteBack:
    """Blend animated crops into the full-size source: (S, S, 3) -> the source's (H, W, 3)."""

    FEATHER = 0.08  # share of the box side over which the crop fades into the source

    def __init__(self, image: np.ndarray, box: Box | None):
        height, width = image.shape[:2]
        if box is None:
            side = min(height, width)
            box = ((width - side) // 2, (height - side) // 2, side, side)
        x, y, w, h = box
        # only the box is blended, in floats: the whole of a phone photo in float32 per
        # written frame cost a second and gigabytes
        self.image, self.box = image, box  # (H, W, 3) uint8
        self.under = image[y:y + h, x:x + w].astype(np.float32)  # (h, w, 3)
        edge = max(1, int(self.FEATHER * min(w, h)))
        # a box is separable, so its blur is the outer product of its two blurred profiles:
        # the 2-D blur of a 4000 px box took 16 s
        self.mask = np.outer(_feathered(h, edge), _feathered(w, edge))[..., None]  # (h, w, 1)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        x, y, w, h = self.box
        patch = cv2.resize(frame, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.float32)
        patch -= self.under  # in place: mask * patch + (1 - mask) * under, in [0, 255]
        patch *= self.mask
        patch += self.under
        out = self.image.copy()
        out[y:y + h, x:x + w] = np.rint(patch, out=patch).astype(np.uint8)
        return out


def _feathered(length: int, edge: int) -> np.ndarray:
    """A 1-D box of ``length`` samples, 0 over ``edge`` at each end, 1 between, blurred so that
    it fades: (length,) float32 in [0, 1]."""
    profile = np.zeros((1, length), np.float32)  # (1, L): one row, for OpenCV
    profile[0, edge:-edge] = 1
    return cv2.GaussianBlur(profile, (0, 0), edge / 2)[0]  # (L,)


def reconstruct_file(model: MonkeyNet, video: str | Path, output: str | Path | None,
                     batch_size: int = BATCH_FRAMES, precision: str = "fp32", crop=None,
                     refine_steps: int = 0, progress: Progress | None = None,
                     inspect: Callable[[np.ndarray, np.ndarray], None] | None = None) -> JobResult:
    """The paper's reconstruction of ``video``; extra['l1'] is the mean absolute error per
    pixel in [0, 1], averaged over frames; extra['static_l1'] the same for the first frame
    repeated (the static-source baseline); extra['identity_l1'] that of the first frame rebuilt
    from itself (the model's appearance error with no motion to follow). ``refine_steps``: see
    ``pipeline.KeypointRefiner``. ``inspect`` sees every batch of real and generated frames."""
    start = time.perf_counter()
    output = None if output is None else Path(output)
    reader = open_video(video)
    if len(first_frames(reader, 2)) < 2:  # it would score 0 for the static source
        raise InputError(f"{reader.path.name} has a single frame: nothing to reconstruct (its "
                         "first frame is the source)")
    crop_at, detector, crop_notes = video_crops(reader, crop_mode(crop, model))
    batches = frame_batches(reader, model.config.frame_size,
                            refine_batch_size(batch_size, refine_steps), crop_at, model.device)
    real_batches: list[torch.Tensor] = []

    def remember():
        for _, batch in batches:
            real_batches.append(batch)
            yield batch

    scores = ReconstructionScores()
    with VideoWriter(output, reader.fps) if output is not None else nullcontext() as writer:
        for predicted in reconstruct(model, remember(), precision, refine_steps):
            real = real_batches.pop(0)
            scores.add(real, predicted)
            if inspect is not None:  # real and generated frames, (B, H, W, 3) uint8 each
                inspect(to_uint8(real), to_uint8(predicted))
            if writer is not None:
                for frame in to_uint8(predicted):
                    writer.write(frame)
            if progress:
                progress(scores.frames, reader.expected_frames)
    return JobResult(output, scores.frames, time.perf_counter() - start,
                     {**scores.means(), "detector": detector},
                     crop_notes + reader_warnings(reader))


def write_image(path: Path, frame: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if not ok:
            raise InputError(f"cannot encode {path}")
        tmp.write_bytes(data.tobytes())
    atomic_write(path, write)


@dataclass
class Prediction:
    """A source read and its keypoints rolled out: what predict_file generates from."""

    still: torch.Tensor  # (1, 3, H, W) float in [0, 1], the model's size
    kp_source: Keypoints  # (1, K, ...)
    kp: Keypoints  # (frames, K, ...): the rolled-out sequence, the source's first
    detector: str | None  # the face detector that placed the crop, if any
    notes: list[str]  # what the user should know of how the source was read


def prepare_prediction(model: MonkeyNet, predictor, source: Path, frames: int,
                       crop=None) -> Prediction:
    """The source of ``predict_file`` read, cropped as ``crop`` says, and its keypoints rolled
    out by ``predictor`` for ``frames`` frames: InputError for a source it cannot use, before
    anything else is read or written."""
    image, box, detector, notes = _source(source, isinstance(crop, tuple), crop_mode(crop, model))
    still = to_tensor([fit_frame(image, model.config.frame_size, box,
                                 f"the source {Path(source).name}")], model.device)
    kp_source = model.keypoints(still)
    kp = predictor.to(model.device).rollout(kp_source[0], frames)  # (frames, K, ...)
    return Prediction(still, kp_source, kp, detector, notes)


def predict_file(model: MonkeyNet, predictor, source: Path, output: Path, frames: int,
                 fps: float, crop=None, inspect: Callable[[np.ndarray], None] | None = None,
                 progress: Progress | None = None,
                 prepared: Prediction | None = None) -> JobResult:
    """Image-to-video: the source's keypoints rolled out by ``predictor``, then generated.
    ``inspect`` sees every batch of generated frames, (B, H, W, 3) uint8. ``prepared``: what
    prepare_prediction gave for these arguments (so that other work can go between)."""
    start = time.perf_counter()
    ready = prepared or prepare_prediction(model, predictor, source, frames, crop)
    with torch.inference_mode():
        skips = model.generator.encode(ready.still)  # the source's features, once
    with VideoWriter(output, fps) as writer:
        for begin in range(0, frames, PREDICT_BATCH_FRAMES):
            made = to_uint8(model.generate(ready.still[0], ready.kp_source,
                                           ready.kp[begin:begin + PREDICT_BATCH_FRAMES],
                                           skips).frames)
            if inspect is not None:
                inspect(made)
            for frame in made:
                writer.write(frame)
            if progress:
                progress(begin + len(made), frames)
    return JobResult(output, frames, time.perf_counter() - start, {"detector": ready.detector},
                     ready.notes)
