"""Training and using the keypoint-sequence predictor (image-to-video)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from .checkpoint import FORMAT as CHECKPOINT_FORMAT, PREDICTOR_FORMAT as FORMAT, load_strict
from .data import list_videos
from .errors import CheckpointError, ConfigError, InputError
from .files import atomic_write
from .framing import crop_mode, frame_batches, video_crops
from .models import Keypoints, MonkeyNet
from .models.predictor import KPPredictor, PredictorConfig
from .video import open_video

KEYPOINT_BATCH_FRAMES = 32  # the detector alone: 4x the frames of a generating batch
PLATEAU_EPOCHS = 50  # epochs without a lower loss before the predictor's rate drops 10x


def extract_keypoints(model: MonkeyNet, folder: Path, min_frames: int,
                      batch_size: int = KEYPOINT_BATCH_FRAMES,
                      crop=None, progress: Callable[[int, int], None] | None = None
                      ) -> tuple[list[Keypoints], int, list[str]]:
    """Keypoints (T, K, ...) of every video in ``folder`` with at least ``min_frames`` frames,
    of frames cropped as ``crop`` says (see framing.crop_mode: face checkpoints find the face,
    as reconstruct and predict do); also returns how many videos were too short, and
    "name: reason" for each unreadable one (or one without a face to crop to). As it goes,
    ``progress(videos done, videos in all)``."""
    tracks, short, unreadable = [], 0, []
    videos = list_videos(folder)
    for done, path in enumerate(videos, 1):
        if progress:
            progress(done - 1, len(videos))
        try:
            reader = open_video(path)
            crop_at, _, _ = video_crops(reader, crop_mode(crop, model))
            found = [model.keypoints(batch) for _, batch in frame_batches(
                reader, model.config.frame_size, batch_size, crop_at, model.device)]
        except InputError as exc:  # unreadable, or damaged part way through
            unreadable.append(f"{path.name}: {exc}")
            continue
        if sum(map(len, found)) < min_frames:
            short += 1
            continue
        tracks.append(Keypoints.cat(found).to("cpu"))
    if not tracks:  # why, or the user is left guessing (a face model finding no face...)
        why = ([f"{short} shorter"] if short else []) + (
            [f"{len(unreadable)} left out, first {unreadable[0]}"] if unreadable else [])
        raise InputError(f"no readable video in {folder} has {min_frames} frames or more "
                         f"({'; '.join(why)})")
    return tracks, short, unreadable


def train_predictor(tracks: list[Keypoints], config: PredictorConfig, epochs: int,
                    batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                    on_epoch: Callable[[int, float], None] | None = None,
                    should_stop: Callable[[], bool] | None = None,
                    start: KPPredictor | None = None) -> KPPredictor:
    """The authors' recipe: random windows of ``num_frames`` consecutive frames, frames after
    the first ``init_frames`` zeroed at the input, L1 on the predicted part, Adam with the
    learning rate cut when the loss plateaus. After each epoch ``on_epoch(epochs done, its
    mean loss)``, then ``should_stop()``: True ends the training there. ``start``: a
    predictor of ``config`` to train further (in place; Adam starts afresh) instead of a new
    one."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if start is not None and start.config != config:
        raise ConfigError(f"the predictor to start from has {start.config}, not {config}")
    predictor = (start or KPPredictor(config)).train()
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, patience=PLATEAU_EPOCHS)
    frames, given = config.num_frames, config.init_frames
    for epoch in range(epochs):
        order = torch.randperm(len(tracks), generator=generator).tolist()
        losses = []
        for start in range(0, len(order), batch_size):
            target = _random_windows(tracks, order[start:start + batch_size], frames, generator)
            loss = _prediction_loss(predictor, target, given)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        mean_loss = sum(losses) / len(losses)
        plateau.step(mean_loss)
        if on_epoch:
            on_epoch(epoch + 1, mean_loss)
        if should_stop and should_stop():
            break
    return predictor.eval()


def _random_windows(tracks: list[Keypoints], indices: list[int], frames: int,
                    generator: torch.Generator) -> Keypoints:
    """``frames`` consecutive keypoints from a random start in each of ``tracks[indices]``:
    mean (B, T, K, 2), covar (B, T, K, 2, 2) or None."""
    windows = []
    for index in indices:
        kp = tracks[index]
        first = int(torch.randint(0, len(kp) - frames + 1, (), generator=generator))
        windows.append(kp[first:first + frames])
    return Keypoints(torch.stack([w.mean for w in windows]),
                     None if windows[0].covar is None
                     else torch.stack([w.covar for w in windows]))  # (B, T, K, ...)


def _prediction_loss(predictor: KPPredictor, target: Keypoints, given: int) -> torch.Tensor:
    """L1 between the predicted and true keypoints after the first ``given`` frames, which
    are all the predictor sees (the later ones are zeroed at its input)."""
    given_only = Keypoints(target.mean.clone(), None if target.covar is None
                           else target.covar.clone())
    given_only.mean[:, given:] = 0
    if given_only.covar is not None:
        given_only.covar[:, given:] = 0
    predicted = predictor(given_only)
    loss = (predicted.mean[:, given:] - target.mean[:, given:]).abs().mean()
    if target.covar is not None:
        loss = loss + (predicted.covar[:, given:] - target.covar[:, given:]).abs().mean()
    return loss


@dataclasses.dataclass
class PredictionScores:
    """Mean L1 (in [-1, 1] coordinates) between the true keypoint means of held-out videos and
    those predicted from each first frame alone, over the frames after it; ``static_l1`` is
    the same for the first frame's keypoints kept still (the baseline to beat, and how far the
    real keypoints move from their first frame); ``moved``: how far the predicted ones do
    (near 0: a predictor that learned to stand still)."""

    l1: float
    static_l1: float
    moved: float
    videos: int


def score_predictor(predictor: KPPredictor, tracks: list[Keypoints]) -> PredictionScores:
    """Roll ``predictor`` out from the first frame of each track (T, K, ...) for the
    sequence length it was trained on and compare with what the video did."""
    if not tracks:
        raise InputError("score_predictor got no tracks to score")
    frames = predictor.config.num_frames
    errors, static, moved = [], [], []
    for kp in tracks:
        truth = kp.mean[:frames]  # (T, K, 2)
        predicted = predictor.rollout(kp[0], len(truth)).mean  # (T, K, 2)
        errors.append((predicted[1:] - truth[1:]).abs().mean().item())
        static.append((truth[:1] - truth[1:]).abs().mean().item())
        moved.append((predicted[:1] - predicted[1:]).abs().mean().item())
    mean = lambda values: sum(values) / len(values)
    return PredictionScores(mean(errors), mean(static), mean(moved), len(tracks))


def to_half_precision(predictor: KPPredictor) -> KPPredictor:
    """The predictor with its weights rounded to float16 (and computing in float32 still):
    what a ``half`` file holds, so that it is scored as it will be used."""
    with torch.no_grad():
        for tensor in predictor.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(tensor.half())
    return predictor


def save_predictor(predictor: KPPredictor, path: Path, provenance: dict,
                   half: bool = False) -> None:
    """``half`` stores the weights as float16, half the file (they load as float32)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in predictor.state_dict().items()}
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = {"format": FORMAT, "config": json.dumps(dataclasses.asdict(predictor.config)),
                "provenance": json.dumps(provenance)}
    data = safetensors_bytes(tensors, metadata=metadata)  # bytes first, as save_checkpoint does
    atomic_write(path, lambda tmp: tmp.write_bytes(data))


def load_predictor(path: Path) -> KPPredictor:
    """A predictor file, rebuilt from the config in its metadata; CheckpointError for a
    config that is missing or damaged, or weights that do not fit it."""
    metadata, state = _read_predictor(path, with_weights=True)
    try:
        predictor = KPPredictor(PredictorConfig(**json.loads(metadata["config"])))
    except (KeyError, TypeError, ValueError) as exc:  # (json's errors are ValueErrors)
        raise CheckpointError(f"{path} holds no usable predictor config "
                              f"({type(exc).__name__}: {exc})") from None
    load_strict(predictor, state, path)
    return predictor.eval()


def keypoints_id(model: MonkeyNet) -> str:
    """A short fingerprint of the keypoint detector's weights: which keypoints a predictor
    learnt to roll out, where the checkpoint has no registered name (a trained file)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.kp_detector.state_dict().items()):
        digest.update(name.encode())
        # rounded to float16: a checkpoint saved at half precision is the same one
        digest.update(tensor.detach().to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def check_pair(predictor: KPPredictor, trained: dict, model: MonkeyNet) -> str | None:
    """The predictor must roll out the keypoints the checkpoint detects: InputError when their
    number or kind differ; a warning (returned) when it was trained on another checkpoint's,
    told by their keypoint detectors' fingerprint where ``trained`` (its provenance) records
    it, else by name; None when they fit."""
    rolled = (predictor.config.num_kp, predictor.config.kp_variance)
    if rolled != (model.config.num_kp, str(model.config.kp_variance)):
        raise InputError(f"the predictor rolls out {rolled[0]} keypoints ({rolled[1]} "
                         f"variance) but the checkpoint detects {model.config.num_kp} "
                         f"({model.config.kp_variance}): use the checkpoint it was trained with")
    trained_on, name = trained.get("checkpoint") or None, model.provenance.get("name")
    fingerprint = trained.get("checkpoint_keypoints")
    other = (fingerprint != keypoints_id(model) if fingerprint
             else bool(trained_on and name and trained_on != name))
    if not other:
        return None
    return (f"the predictor was trained on the keypoints of "
            f"{repr(trained_on) if trained_on and trained_on != name else 'another checkpoint'}"
            f", not of {repr(name) if name else 'this one'}: its motion may not fit")


def predictor_provenance(path: Path) -> dict:
    """What a predictor file says of its training: videos, epochs, checkpoint (its name, and
    keypoints_id's fingerprint in files written since it was added) and, when its data had a
    test/ split, test_l1, test_static_l1, test_moved, test_videos."""
    return json.loads(_read_predictor(path, with_weights=False)[0].get("provenance", "{}"))


def _read_predictor(path: Path, with_weights: bool) -> tuple[dict, dict]:
    if not Path(path).is_file():
        hint = ("" if Path(path).suffix else " (a checkpoint's bundled predictor: "
                "hub.predictor_path(name) gives its file)")
        raise CheckpointError(f"predictor not found: {path}{hint}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {k: handle.get_tensor(k) for k in handle.keys()} if with_weights else {}
    except Exception as exc:  # any damage to the file
        raise CheckpointError(f"{path} is not a readable predictor ({exc})") from None
    if metadata.get("format") == CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is a Monkey-Net checkpoint, not an image-to-video "
                              "predictor: give it as --checkpoint")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a monkeyanim predictor (no '{FORMAT}' metadata)")
    return metadata, state
