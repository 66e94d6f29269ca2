"""Training data: pairs of frames of one video, from any folder of videos `animate` reads."""

from __future__ import annotations

import math
import random
import signal
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .errors import InputError
from .video import IMAGE_SUFFIXES, VIDEO_SUFFIXES, fit_frame, open_video, read_image, split_strip


# Frame strips are PNG/JPEG images decoded whole for every pair: MGif's, up to 300 frames
# wide, took a third of a training iteration on two cores. Cached up to this much memory.
STRIP_CACHE_BYTES = 1 << 30
SPLITS = ("train", "val", "test")  # the sub-folders of a data folder


@dataclass
class Augmentation:
    """The authors' train-time augmentation, applied identically to both frames of a pair."""

    horizontal_flip: bool = True
    time_flip: bool = True
    resize_ratio: tuple[float, float] | None = None  # random zoom, then crop back to size
    hue: float = 0.0  # colour jitter: hue shift up to +-hue/2 of the colour wheel
    rotation_degrees: float = 0.0


def training_folder(data_dir: Path) -> Path:
    """DATA_DIR/train/, or DATA_DIR itself when it is a plain folder of videos."""
    return _split_folder(Path(data_dir), "train", "training videos")


def evaluation_folder(data_dir: Path) -> Path:
    """DATA_DIR/test/, or DATA_DIR itself when it is a plain folder of videos."""
    return _split_folder(Path(data_dir), "test", "videos to evaluate")


def videos_beside_splits(data_dir: Path) -> list[Path]:
    """The video files directly in a DATA_DIR that has train/, val/ or test/ folders: no
    split reads them."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir() or not any((data_dir / name).is_dir() for name in SPLITS):
        return []
    return sorted(p for p in data_dir.iterdir() if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in VIDEO_SUFFIXES)


def _split_folder(data_dir: Path, split: str, what: str) -> Path:
    """DATA_DIR/SPLIT/, or DATA_DIR itself when it holds none of train/, val/ or test/: those
    would otherwise be read as folders of frames, so a folder with others but not SPLIT is
    refused by name."""
    if (data_dir / split).is_dir():
        return data_dir / split
    if data_dir.is_file():
        raise InputError(f"{data_dir} is a file: give the folder of videos it is in (or one "
                         f"with a {split}/ folder)")
    if not data_dir.is_dir():
        raise InputError(f"data folder not found: {data_dir}")
    others = [f"{name}/" for name in SPLITS if name != split and (data_dir / name).is_dir()]
    if others:
        raise InputError(f"{data_dir} has {' and '.join(others)} but no {split}/ folder of "
                         f"{what}")
    return data_dir


def list_videos(folder: Path) -> list[Path]:
    """Videos, frame strips and frame folders directly inside ``folder`` (not hidden ones,
    such as .ipynb_checkpoints/ or ._name files a Mac leaves)."""
    folder = Path(folder)  # (a str from a library caller)
    if not folder.is_dir():
        raise InputError(f"data folder not found: {folder}")
    items = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and (
        p.is_dir() or p.suffix.lower() in VIDEO_SUFFIXES | IMAGE_SUFFIXES))
    if not items:
        raise InputError(f"{folder} holds no videos, frame strips or frame folders")
    return items


class PairDataset(Dataset):
    """Each item: two random frames of one video, (2, 3, H, W) float in [0, 1] (source, driving).

    Videos are decoded once, fitted to ``size`` (centre square) and kept in memory. So are
    frame strips while they fit in ``strip_cache_bytes``; the rest are read again per item
    (the authors' shapes: 2.5 GB at 64 px). Videos shorter than 2 frames are skipped and
    listed in ``skipped``.
    """

    def __init__(self, folder: Path, size: tuple[int, int], augmentation: Augmentation | None = None,
                 num_repeats: int = 1, seed: int = 0, strip_cache_bytes: int = STRIP_CACHE_BYTES):
        self.size = size
        self.strip_budget = strip_cache_bytes
        self.augmentation = augmentation or Augmentation(False, False)
        self.num_repeats = num_repeats
        self.cache: dict[int, np.ndarray] = {}
        self.videos: list[Path] = []
        self.skipped: list[Path] = []  # too short to make a pair
        self.unreadable: list[str] = []
        self.cut_short: list[str] = []  # notes of those that end before the end they state
        for path in list_videos(Path(folder)):
            try:
                reader = open_video(path)
            except InputError as exc:
                self.unreadable.append(f"{path.name}: {exc}")
                continue
            count = reader.num_frames or 1
            if reader.kind in ("video", "folder", "animation") or (reader.kind == "strip"
                                                      and self._strip_fits(count)):
                # decoded once here, so that forked loader workers share the frames
                self.cache[len(self.videos)] = np.stack(
                    [fit_frame(f, size) for f in reader.frames()])  # (T, H, W, 3)
                count = len(self.cache[len(self.videos)])
                if note := reader.ended_early():  # used as far as it decodes, and said so
                    self.cut_short.append(note)
            if count < 2:
                self.cache.pop(len(self.videos), None)
                self.skipped.append(path)
                continue
            self.videos.append(path)
        if not self.videos:
            why = f" (left out first: {self.unreadable[0]})" if self.unreadable else ""
            raise InputError(f"{folder} holds no readable video with 2 frames or more{why}")
        self.rng = random.Random(seed)

    def _strip_fits(self, count: int) -> bool:
        """Whether a strip of ``count`` frames still fits the cache; if so, it is reserved."""
        size = count * self.size[0] * self.size[1] * 3
        if size > self.strip_budget:
            return False
        self.strip_budget -= size
        return True

    def __len__(self) -> int:
        return len(self.videos) * self.num_repeats

    def frames(self, index: int) -> np.ndarray:
        """All frames of video ``index``: (T, H, W, 3) uint8."""
        if index in self.cache:
            return self.cache[index]
        image = read_image(self.videos[index])  # a frame strip (or a single image)
        return np.stack([fit_frame(f, self.size) for f in split_strip(image)])  # (T, H, W, 3)

    def __getitem__(self, item: int) -> torch.Tensor:
        frames = self.frames(item % len(self.videos))
        if len(frames) < 2:
            frames = np.concatenate([frames, frames])  # (2, H, W, 3)
        rng = np.random.default_rng(torch.randint(0, 2 ** 31, ()).item())
        pair = frames[np.sort(rng.choice(len(frames), 2, replace=False))]  # (2, H, W, 3)
        pair = augment(pair, self.augmentation, rng)
        return torch.from_numpy(pair).permute(0, 3, 1, 2).float().div(255)  # (2, 3, H, W)


def augment(pair: np.ndarray, aug: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """The same random flip / zoom / rotation / hue shift for both frames (2, H, W, 3) uint8."""
    if aug.time_flip and rng.random() < 0.5:
        pair = pair[::-1]
    if aug.horizontal_flip and rng.random() < 0.5:
        pair = pair[:, :, ::-1]
    height, width = pair.shape[1:3]
    zoom = rng.uniform(*aug.resize_ratio) if aug.resize_ratio else 1.0
    angle = rng.uniform(-aug.rotation_degrees, aug.rotation_degrees) if aug.rotation_degrees else 0
    if zoom != 1.0 or angle:
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, zoom)
        shift = rng.uniform(-1, 1, 2) * max(0.0, zoom - 1) * np.array([width, height]) / 2
        matrix[:, 2] += shift
        pair = np.stack([cv2.warpAffine(np.ascontiguousarray(f), matrix, (width, height),
                                        borderMode=cv2.BORDER_REFLECT)
                         for f in pair])  # (2, H, W, 3)
    if aug.hue:
        shift = int(round(rng.uniform(-aug.hue, aug.hue) / 2 * 180))  # OpenCV hue is 0..179
        hsv = np.stack([cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2HSV)
                        for f in pair])  # (2, H, W, 3)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + shift) % 180).astype(np.uint8)
        pair = np.stack([cv2.cvtColor(f, cv2.COLOR_HSV2RGB) for f in hsv])  # (2, H, W, 3)
    return np.ascontiguousarray(pair)


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


def init_worker(worker_id: int) -> None:
    """A loader worker leaves SIGINT and SIGTERM to the trainer: a terminal's Ctrl-C and a job
    scheduler's SIGTERM reach the whole process group, and a worker dying of them would abort
    the iteration that the trainer is about to finish and save. The trainer shuts its workers
    down itself, and they exit on their own if it dies."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seed_worker(worker_id)


class EndlessSampler(Sampler):
    """A fresh random permutation every epoch, forever; with DDP each rank takes every
    world-th index of the same permutation."""

    def __init__(self, size: int, rank: int, world: int, seed: int):
        self.size, self.rank, self.world, self.seed = size, rank, world, seed

    def __iter__(self):
        epoch = 0
        while True:
            order = torch.randperm(self.size, generator=torch.Generator().manual_seed(
                self.seed + epoch))
            yield from order[self.rank::self.world].tolist()
            epoch += 1


def iterations_per_epoch(dataset_len: int, batch_size: int) -> int:
    return max(1, math.floor(dataset_len / batch_size))
