"""Animation and reconstruction on tensors (no file IO): keypoint transfer and batched,
streamed generation with everything that depends only on the source computed once."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from collections.abc import Iterable, Iterator

import cv2
import numpy as np
import torch

from .errors import InputError, check_count
from .models import Keypoints, MonkeyNet

PRECISIONS = ("fp32", "bf16", "fp16")


def relative_keypoints(kp_source: Keypoints, kp_driving: Keypoints,
                       kp_driving_first: Keypoints, scale: float = 1.0) -> Keypoints:
    """Paper Eq. 7: move the source keypoints by the driving motion since the first frame.

    kp_source (1, K, 2) or (K, 2); kp_driving (T, K, 2); kp_driving_first (1, K, 2) or (K, 2).
    The covariances stay the driving ones, as in the authors' code. ``scale`` multiplies the
    displacement (the authors' ``movement_mult``). InputError for other shapes (the whole
    driving video given as its first frame would hold every frame at the source's pose).
    """
    for kp, what in ((kp_source, "kp_source"), (kp_driving_first, "kp_driving_first")):
        shape = tuple(kp.mean.shape)
        if len(shape) not in (2, 3) or len(shape) == 3 and shape[0] != 1:
            raise InputError(f"{what} must be one frame's keypoints, (K, 2) or (1, K, 2), got "
                             f"{shape} (kp[:1] is the first frame's)")
    counts = {kp.mean.shape[-2:] for kp in (kp_source, kp_driving, kp_driving_first)}
    if kp_driving.mean.ndim != 3 or len(counts) > 1:
        raise InputError(f"relative_keypoints takes kp_driving (T, K, 2) and one frame's (K, 2) "
                         f"of the same K, got {tuple(kp_driving.mean.shape)}, "
                         f"{tuple(kp_source.mean.shape)} and {tuple(kp_driving_first.mean.shape)}")
    mean = (kp_driving.mean - kp_driving_first.mean) * scale + kp_source.mean  # (T, K, 2)
    return Keypoints(mean, kp_driving.covar)


REFINE_LR = 0.01  # Adam's step on keypoint coordinates in [-1, 1]: 0.64 px at 128 px
# weight of the squared change of a keypoint's correction per frame; 3 fits the faces test
# clips better than 10 and keeps examples/faces as steady (training/README.md)
REFINE_SMOOTHNESS = 3.0
REFINE_CHUNK_FRAMES = 8  # frames fitted together: a fixed number, whatever --batch-size is


def check_refine_steps(steps: int) -> None:
    """InputError unless ``steps`` is 0 (off) or a whole number of steps."""
    check_count(steps, "refine steps (0: off)")
    if steps < 0:
        raise InputError(f"refine steps must be 0 (off) or more, not {steps!r}")


def refine_batch_size(batch_size: int, refine_steps: int) -> int:
    """The frames to read at a time: with refinement a whole number of its chunks, so that
    the chunks, and so the result, are the same whatever --batch-size is."""
    if not refine_steps or batch_size < 1:  # (a bad size is refused where it is used)
        return batch_size
    return REFINE_CHUNK_FRAMES * max(1, batch_size // REFINE_CHUNK_FRAMES)


class KeypointRefiner:
    """Driving keypoints fitted to the driving video's own motion, chunk after chunk.

    Each frame's keypoints start at the detector's plus the previous chunk's last correction
    (refined minus detected) and take ``steps`` Adam steps on the L1 between the frame and
    the model's rebuilding of it from ``reference`` (a frame of the same video) moved to
    them; the corrections pay ``smoothness`` x their squared change from frame to frame,
    across chunks too, so that the motion does not jitter. Frames are fitted in chunks of
    REFINE_CHUNK_FRAMES from the start of each call (held near their neighbours on both
    sides within a chunk, which fits better than one frame at a time: on mgif's first test
    video, 5 steps took L1 from 0.0248 to 0.0267 one at a time, to 0.0233 in chunks of 8);
    calls of a whole number of chunks (``refine_batch_size``) give the same result however
    they are cut. This says how the driving video really moved where the detector alone
    guesses less well (e.g. a face unlike its training set). Covariances stay the
    detector's; the networks are not changed.

    reference (1, C, H, W) float in [0, 1]; kp_reference (1, K, ...) its detected keypoints.
    """

    def __init__(self, model: MonkeyNet, reference: torch.Tensor, kp_reference: Keypoints,
                 steps: int, lr: float = REFINE_LR, smoothness: float = REFINE_SMOOTHNESS):
        self.model, self.steps, self.lr, self.smoothness = model, steps, lr, smoothness
        with (torch.inference_mode(False), torch.no_grad(),
              torch.autocast(reference.device.type, enabled=False)):
            # clones: tensors made under inference_mode cannot be saved for backward
            self.reference = reference.float().clone()
            self.kp_reference = Keypoints(*(None if t is None else t.float().clone()
                                            for t in (kp_reference.mean, kp_reference.covar)))
            self.skips = model.generator.encode(self.reference)
        self.previous: torch.Tensor | None = None  # (1, K, 2): the last frame's correction

    def __call__(self, frames: torch.Tensor, kp_frames: Keypoints) -> Keypoints:
        """frames (B, C, H, W) in [0, 1] following the previous call's; kp_frames (B, K, ...)
        their detected keypoints -> refined Keypoints (B, K, ...)."""
        with (torch.inference_mode(False), torch.enable_grad(),
              torch.autocast(frames.device.type, enabled=False)):
            frames = frames.float().clone()
            detected = kp_frames.mean.float().clone()  # (B, K, 2)
            covar = None if kp_frames.covar is None else kp_frames.covar.float().clone()
            chunks = range(0, len(frames), REFINE_CHUNK_FRAMES)
            offsets = [self._fit(frames[i:i + REFINE_CHUNK_FRAMES],
                                 detected[i:i + REFINE_CHUNK_FRAMES],
                                 None if covar is None else covar[i:i + REFINE_CHUNK_FRAMES])
                       for i in chunks]
        refined = detected + torch.cat(offsets)  # (B, K, 2)
        return Keypoints(refined.to(kp_frames.mean.dtype), kp_frames.covar)

    def _fit(self, frames: torch.Tensor, detected: torch.Tensor,
             covar: torch.Tensor | None) -> torch.Tensor:
        """The corrections (N, K, 2) of one chunk of frames (N, C, H, W), detected (N, K, 2)."""
        # the last frame's correction starts the next ones: consecutive frames move alike
        start = self.previous if self.previous is not None else detected.new_zeros(1, 1, 2)
        offset = start.expand_as(detected).clone().requires_grad_(True)  # (N, K, 2)
        optimizer = torch.optim.Adam([offset], lr=self.lr)
        for _ in range(self.steps):
            kp = Keypoints(detected + offset, covar)
            # the generated frame, what is shown, not the warped source alone: fitting the
            # warp made mgif's painted frames worse (0.0145 -> 0.0180 on 4 test videos)
            rebuilt = self.model.generator(self.reference, self.kp_reference, kp,
                                           skips=self.skips).frames  # (N, C, H, W)
            # summed over frames: each frame's step is its own, whatever the chunk's length
            loss = (rebuilt - frames).abs().mean(dim=(1, 2, 3)).sum()
            chain = offset if self.previous is None else torch.cat([self.previous, offset])
            # (1 + N, K, 2): the last offset of the chunk before, then this one's
            loss = loss + self.smoothness * (chain[1:] - chain[:-1]).square().sum()
            (offset.grad,) = torch.autograd.grad(loss, [offset])  # no gradient to weights
            optimizer.step()
        self.previous = offset.detach()[-1:]
        return offset.detach()


def hull_area(points: torch.Tensor) -> float:
    """Area of the convex hull of (K, 2) points."""
    hull = cv2.convexHull(points.detach().float().cpu().numpy().astype(np.float32))
    return float(cv2.contourArea(hull))


def adapt_scale(kp_source: Keypoints, kp_driving_first: Keypoints) -> float:
    """sqrt(area ratio) of the keypoints' convex hulls, source over first driving frame."""
    driving = hull_area(kp_driving_first.mean.reshape(-1, 2))  # (K, 2)
    if driving <= 0:
        return 1.0
    return float(np.sqrt(hull_area(kp_source.mean.reshape(-1, 2)) / driving))  # (K, 2)


def normalized_pose(mean: torch.Tensor) -> torch.Tensor:
    """Keypoints (..., K, 2) centred on their mean and divided by their spread."""
    centred = mean - mean.mean(dim=-2, keepdim=True)
    spread = centred.square().sum(dim=(-2, -1), keepdim=True).div(mean.shape[-2]).sqrt()
    return centred / spread.clamp(min=1e-6)


def best_frame(kp_source: Keypoints, kp_driving: Keypoints) -> int:
    """Index of the driving frame whose pose (position and scale removed) is closest to the
    source's: kp_driving (T, K, 2)."""
    return int(_pose_distance(kp_source, kp_driving).argmin())


def _pose_distance(kp_source: Keypoints, kp_driving: Keypoints) -> torch.Tensor:
    """(T,) squared distances of each driving frame's normalised pose to the source's."""
    source = normalized_pose(kp_source.mean.reshape(1, -1, 2))  # (1, K, 2)
    return (normalized_pose(kp_driving.mean) - source).square().sum(dim=(1, 2))  # (T,)


def to_tensor(frames: list[np.ndarray], device: torch.device | str = "cpu") -> torch.Tensor:
    """T x (H, W, 3) uint8 (numpy arrays or tensors) -> (T, 3, H, W) float32 in [0, 1],
    channels_last. InputError for other frames (floats would be divided by 255 again, into
    black)."""
    if isinstance(frames, (np.ndarray, torch.Tensor)) and frames.ndim == 3:
        raise InputError(f"to_tensor takes a list of frames (or a (T, H, W, 3) array), got one "
                         f"frame {tuple(frames.shape)}: give [frame]")
    device = resolve_device(device)  # (cuda without one: InputError, not torch's assert)
    frames = [frame.numpy(force=True) if isinstance(frame, torch.Tensor) else frame
              for frame in frames]  # (torchvision's and decord's readers give tensors)
    if not len(frames):
        raise InputError("to_tensor got no frames")
    bad = next((frame for frame in frames if not isinstance(frame, np.ndarray)
                or frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3), None)
    if bad is not None:
        got = (f"{bad.dtype} {bad.shape}" if isinstance(bad, np.ndarray) else type(bad).__name__)
        raise InputError(f"to_tensor takes (H, W, 3) uint8 RGB frames, got {got}")
    sizes = sorted({frame.shape[:2] for frame in frames})
    if len(sizes) > 1:
        raise InputError(f"to_tensor takes frames of one size, got {sizes[0]} and {sizes[1]}"
                         " (monkeyanim.video.fit_frame resizes them)")
    array = torch.from_numpy(np.stack(frames))  # (T, H, W, 3)
    tensor = array.to(device).permute(0, 3, 1, 2).float().div_(255)  # (T, 3, H, W)
    return tensor.contiguous(memory_format=torch.channels_last)


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) in [0, 1] -> (T, H, W, 3) uint8."""
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise InputError(f"to_uint8 takes frames (T, 3, H, W), got {got} (frames[None] for one)")
    array = frames.float().clamp(0, 1).mul(255).round().byte()
    return array.permute(0, 2, 3, 1).contiguous().cpu().numpy()  # (T, H, W, 3)


def resolve_device(device: str | torch.device) -> str:
    """A device as torch names it: 'auto' is cuda when there is one; cuda without one, and
    names torch does not run this model on, are refused (InputError)."""
    device = str(device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu:0":  # torch's name for the CPU too
        device = "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}; choose auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"device {device!r} was asked for but no CUDA device is available")
    return device


def check_precision(precision: str, device: torch.device | None = None) -> None:
    """InputError unless ``precision`` is one of PRECISIONS and runs on ``device`` (when
    given)."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if device is not None and precision == "fp16" and device.type != "cuda":
        raise InputError("fp16 needs a CUDA device; use --precision bf16 on a CPU")


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """Autocast for bf16 (CPU or CUDA) and fp16 (CUDA only); fp32 runs as is."""
    check_precision(precision, device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


TRANSFER_MODES = ("relative", "absolute")  # paper Eq. 7; the driving keypoints as they are


def check_mode(mode: str) -> None:
    """InputError unless ``mode`` is one of TRANSFER_MODES."""
    if mode not in TRANSFER_MODES:
        raise InputError(f"unknown mode {mode!r}; choose {' or '.join(TRANSFER_MODES)}")


def default_mode(model: MonkeyNet) -> str:
    """The keypoint transfer a checkpoint was evaluated with ('absolute' for MGif, as in the
    paper), recorded in its metadata; 'relative' otherwise."""
    return model.provenance.get("default_mode", "relative")


class Animator:
    """Animates one source image; call it with batches of one driving video's frames, in
    order, and ``new_video()`` before another driving video's (its first frame seen is
    where relative motion is measured from, and refinement's reference).

    source (3, H, W) or (1, 3, H, W) float in [0, 1]. The source's keypoints and encoder
    features are computed once. ``mode`` 'relative' moves the source keypoints by the
    driving motion since ``kp_driving_first`` (default: the first frame seen); 'absolute'
    uses the driving keypoints as they are; None: the checkpoint's own (``default_mode``).
    ``refine_steps`` > 0 fits the driving keypoints to the driving video's own motion first
    (``KeypointRefiner``); frames are then fitted batch by batch, and batches of a multiple
    of 8 frames (REFINE_CHUNK_FRAMES) give the same result whatever their size, smaller ones
    another (one frame at a time fits worse).
    """

    def __init__(self, model: MonkeyNet, source: torch.Tensor, mode: str | None = None,
                 scale_motion: bool = False, kp_driving_first: Keypoints | None = None,
                 precision: str = "fp32", refine_steps: int = 0):
        mode = mode or default_mode(model)
        check_mode(mode)
        if scale_motion and mode == "absolute":
            raise InputError("scale_motion scales relative motion; the mode is absolute")
        if kp_driving_first is not None and mode == "absolute":
            raise InputError("kp_driving_first is where relative motion is measured from; the "
                             "mode is absolute")
        check_refine_steps(refine_steps)
        self.model, self.mode, self.scale_motion = model, mode, scale_motion
        self.refine_steps = refine_steps
        # made from the first driving frame seen, unless set_reference picks another
        self.refiner: KeypointRefiner | None
        self.context = precision_context(precision, model.device)
        with torch.inference_mode(), self.context:
            # a copy: a caller reusing its tensor must not change the cached source
            self.source = model.check_image(source, "source").clone()  # (1, 3, H, W)
            self.kp_source = model.kp_detector(self.source).float()
            self.skips = model.generator.encode(self.source)
        self.given_first = (None if kp_driving_first is None else
                            model.one_frame_keypoints(kp_driving_first, "kp_driving_first"))
        self.new_video()

    def new_video(self) -> None:
        """Forget the driving video seen so far (its reference frame, the motion's scale,
        refinement's corrections); the source's keypoints and features stay cached."""
        self.kp_first = self.given_first
        self.scale: float | None = None
        self.refiner = None

    def transfer(self, kp_driving: Keypoints) -> Keypoints:
        if self.mode == "absolute":
            return kp_driving
        if self.kp_first is None:
            self.kp_first = kp_driving[:1]
        if self.scale is None:
            self.scale = adapt_scale(self.kp_source, self.kp_first) if self.scale_motion else 1.0
        return relative_keypoints(self.kp_source, kp_driving, self.kp_first, self.scale)

    def set_reference(self, frame: torch.Tensor, kp: Keypoints | None = None) -> None:
        """frame (C, H, W) in [0, 1]: the driving frame that motion is measured from (in
        relative mode) and that refinement rebuilds the others from; ``kp``: its keypoints
        (1, K, ...) when they are already detected."""
        with torch.inference_mode(), self.context:
            reference = self.model.check_image(frame, "driving frame")  # (1, C, H, W)
            kp = (self.model.kp_detector(reference).float() if kp is None
                  else self.model.one_frame_keypoints(kp, "kp"))
        self.kp_first = kp  # detected keypoints, not refined ones: the refiner's own start
        self.scale = None  # (scale_motion: measured again, against this frame)
        if self.refine_steps:
            self.refiner = KeypointRefiner(self.model, reference, kp, self.refine_steps)

    def __call__(self, driving: torch.Tensor) -> torch.Tensor:
        """driving (B, 3, H, W) in [0, 1] -> animated frames (B, 3, H, W) in [0, 1], float32
        (bfloat16 or float16 under that precision)."""
        with torch.inference_mode(), self.context:
            driving = self.model.check_frames(driving, "driving frames")
            kp_driving = self.model.kp_detector(driving).float()
            if self.refine_steps:
                if self.refiner is None:  # the first frame seen is the reference
                    self.refiner = KeypointRefiner(self.model, driving[:1], kp_driving[:1],
                                                   self.refine_steps)
                    if self.kp_first is None:  # motion from its detected keypoints
                        self.kp_first = kp_driving[:1]
                kp_driving = self.refiner(driving, kp_driving)
            kp = self.transfer(kp_driving)
            return self.model.generator(self.source, self.kp_source, kp, skips=self.skips).frames


def best_driving_frame(model: MonkeyNet, kp_source: Keypoints, batches: Iterable[torch.Tensor],
                       precision: str = "fp32") -> tuple[int, Keypoints]:
    """The index of the driving frame whose pose is closest to the source's (see best_frame)
    and its keypoints (1, K, ...), batch by batch: memory flat in the video's length (the
    keypoints of every frame, kept as small tensors, grew the heap by 17 MB per 1,000)."""
    best, seen = None, 0  # (distance, index, keypoints) of the closest frame so far
    with torch.inference_mode(), precision_context(precision, model.device):
        for batch in batches:
            kp = model.kp_detector(model.check_frames(batch, "frames")).float()
            distance = _pose_distance(kp_source, kp)  # (B,)
            index = int(distance.argmin())
            if best is None or distance[index] < best[0]:
                kept = Keypoints(kp.mean[index:index + 1].clone(),  # (1, K, 2), not a view
                                 None if kp.covar is None else kp.covar[index:index + 1].clone())
                best = (float(distance[index]), seen + index, kept)
            seen += len(batch)
    if best is None:
        raise InputError("the driving video has no frames")
    return best[1], best[2]


def reconstruct(model: MonkeyNet, batches: Iterable[torch.Tensor], precision: str = "fp32",
                refine_steps: int = 0) -> Iterator[torch.Tensor]:
    """The paper's video reconstruction: the first frame animated to every frame's keypoints
    (absolute; ``refine_steps``: see ``KeypointRefiner``). Yields (B, 3, H, W) predictions
    batch by batch."""
    animator = None
    for batch in batches:
        if animator is None:
            if isinstance(batch, torch.Tensor) and not len(batch):  # it has no batch[0]
                raise InputError("frames holds no frames: (0, C, H, W)")
            animator = Animator(model, batch[0], mode="absolute", precision=precision,
                                refine_steps=refine_steps)
        yield animator(batch)


@dataclass
class ReconstructionScores:
    """Sums of per-frame mean absolute errors, for the model and the static source (the
    first frame repeated), and the first frame's own error (rebuilt from itself)."""

    frames: int = 0
    model: float = 0.0
    static: float = 0.0
    identity: float = 0.0
    first: torch.Tensor | None = None  # (1, C, H, W)

    def add(self, real: torch.Tensor, predicted: torch.Tensor) -> None:
        """real, predicted: (B, C, H, W) in [0, 1]."""
        errors = (predicted.float() - real).abs().mean(dim=(1, 2, 3))  # (B,)
        if self.first is None:
            self.first, self.identity = real[:1], errors[0].item()
        self.model += errors.sum().item()
        self.static += (self.first - real).abs().mean(dim=(1, 2, 3)).sum().item()
        self.frames += len(real)

    def means(self) -> dict[str, float]:
        return {"l1": self.model / self.frames, "static_l1": self.static / self.frames,
                "identity_l1": self.identity}
