"""The paper's video-reconstruction metrics over a test split (section 4.2).

L1 is computed here. AKD / MKR (keypoints of an external detector in real vs generated frames)
and AED (distance of identity embeddings) need external models; each is reported as
unavailable, with the reason, when its detector cannot run offline on this install.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

from .data import list_videos
from .faces import sfd_weights_path
from .jobs import reconstruct_file
from .models import MonkeyNet

FAN_WEIGHTS = "2DFAN4-cd938726ad.zip"  # face-alignment's landmark model


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def external_metrics(model: MonkeyNet) -> dict[str, str]:
    """Why each external-detector metric is (un)available for this model's kind of data."""
    if model.provenance.get("face_model"):
        landmarks = sfd_weights_path().parent / FAN_WEIGHTS
        if not _installed("face_alignment"):
            reason = "needs face landmarks: install monkeyanim[face] (face-alignment)"
        elif not landmarks.is_file() or not sfd_weights_path().is_file():
            reason = f"face-alignment weights are not in {landmarks.parent} (no download here)"
        else:
            reason = "face-alignment landmarks are available but not wired into evaluate yet"
        aed = ("needs an identity embedding: dlib-bin + face-recognition-models are not installed"
               if not _installed("face_recognition") else
               "face_recognition is installed but not wired into evaluate yet")
        return {"akd": reason, "mkr": reason, "aed": aed}
    pose = ("needs body keypoints: mediapipe (0.10.14) is not installed"
            if not _installed("mediapipe") else
            "mediapipe is installed but not wired into evaluate yet")
    return {"akd": pose, "mkr": pose,
            "aed": "the paper defines AED with a re-identification network for bodies; none "
                   "ships offline"}


def evaluate(model: MonkeyNet, data_dir: Path, limit: int | None = None, batch_size: int = 8,
             crop=None, on_video: Callable[[str, dict], None] | None = None) -> dict:
    """Reconstruct every test video; returns per-video and mean L1 next to the static-source
    baseline, and the external metrics' status."""
    folder = data_dir / "test" if (data_dir / "test").is_dir() else data_dir
    videos = list_videos(folder)[:limit] if limit else list_videos(folder)
    per_video = {}
    for video in videos:
        result = reconstruct_file(model, video, None, batch_size, crop=crop)
        per_video[video.name] = {"frames": result.frames, "l1": result.extra["l1"],
                                 "static_l1": result.extra["static_l1"]}
        if on_video:
            on_video(video.name, per_video[video.name])
    mean = lambda key: sum(v[key] for v in per_video.values()) / len(per_video)
    return {"data": str(folder), "videos": per_video, "l1": mean("l1"),
            "static_l1": mean("static_l1"),
            "unavailable": external_metrics(model)}
