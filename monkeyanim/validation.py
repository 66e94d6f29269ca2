"""Held-out validation while training: the paper's reconstruction L1 on videos the run does not
train on (the data folder's val/), measured every ``train.validate_every`` iterations, with the
best weights so far kept beside the latest. Small data overfits: on a few dozen talking-head
clips the test L1 of the unseen people rose while the training people's kept falling."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .checkpoint import read_metadata, save_checkpoint
from .data import PairDataset
from .errors import CheckpointError, InputError
from .models import MonkeyNet
from .pipeline import ReconstructionScores, reconstruct

BEST_FILE = "best.safetensors"
VAL_SPLIT = "val"
TEST_SPLIT = "test"  # (read by evaluate: a run folder there would be read as a video)
# frames per validation video, spread evenly from the first: a stable mean that costs a few
# seconds on a CPU at 64 px, so that validating every few hundred iterations stays cheap
VALIDATION_FRAMES = 64
VALIDATION_BATCH = 16


def spread(count: int, frames: int) -> np.ndarray:
    """``frames`` indices spread evenly over ``count`` frames, the first always included."""
    return np.unique(np.linspace(0, count - 1, min(count, frames)).round().astype(int))


class HeldOut:
    """The videos of one folder, fitted to the model's frame size and kept in memory.

    Each video keeps at most ``frames_per_video`` frames (:func:`spread`): (T, H, W, 3) uint8.
    """

    def __init__(self, folder: Path, size: tuple[int, int],
                 frames_per_video: int = VALIDATION_FRAMES):
        if not Path(folder).is_dir():
            raise InputError(f"validation needs held-out videos in {folder} "
                             f"(train.validate_every is set)")
        data = PairDataset(Path(folder), size)
        self.names = [path.name for path in data.videos]
        self.unreadable = data.unreadable  # "name: why" of the files that could not be read
        self.videos = [frames[spread(len(frames), frames_per_video)]
                       for frames in map(data.frames, range(len(data.videos)))]

    def l1(self, model: MonkeyNet, precision: str = "fp32") -> float:
        """Mean over the videos of each one's reconstruction L1 (pixels in [0, 1]), as
        ``monkeyanim evaluate`` reports it, with ``model`` in eval mode for the measure."""
        modes = [module.training for module in model.modules()]
        model.eval()
        try:
            return sum(self._video_l1(model, frames, precision)
                       for frames in self.videos) / len(self.videos)
        finally:
            for module, mode in zip(model.modules(), modes):
                module.training = mode

    @staticmethod
    def _video_l1(model: MonkeyNet, frames: np.ndarray, precision: str) -> float:
        video = torch.from_numpy(frames).to(model.device)
        video = video.permute(0, 3, 1, 2).float().div(255)  # (T, 3, H, W)
        batches = video.split(VALIDATION_BATCH)
        scores = ReconstructionScores()
        for made, real in zip(reconstruct(model, batches, precision), batches):
            scores.add(real, made)
        return scores.means()["l1"]


class KeepBest:
    """Measures a model on held-out videos and writes it to ``path`` whenever it beats the
    best so far. The best's L1 lives in that file's provenance (``val_l1``): a resumed run
    (``carry_on``) compares against it, whatever its last checkpoint recorded."""

    def __init__(self, held_out: HeldOut, path: Path, precision: str = "fp32",
                 carry_on: bool = False):
        self.held_out, self.path, self.precision = held_out, Path(path), precision
        self.best, self.best_iteration = math.inf, None
        self.last = math.nan  # the latest measure
        if carry_on and self.path.is_file():
            try:
                provenance = read_metadata(self.path)[1]
            except CheckpointError as exc:
                raise InputError(f"cannot resume the run's best weights: {exc}") from None
            self.best = float(provenance.get("val_l1", math.inf))
            self.best_iteration = provenance.get("iterations")

    def summary(self) -> str | None:
        """'val_l1 LAST, best BEST at ITERATION', or None before this run's first measure."""
        if math.isnan(self.last):
            return None
        return f"val_l1 {self.last:.4f}, best {self.best:.4f} at {self.best_iteration}"

    def __call__(self, model: MonkeyNet, iteration: int) -> float:
        """The model's held-out L1 now; writes it as the best when it is."""
        l1 = self.last = self.held_out.l1(model, self.precision)
        if l1 < self.best:
            self.best, self.best_iteration = l1, iteration
            provenance = dict(model.provenance, iterations=iteration, val_l1=round(l1, 6),
                              val_videos=self.held_out.names)
            save_checkpoint(model, self.path, provenance)
        return l1
