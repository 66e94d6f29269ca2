"""Face metrics of the paper (AKD, MKR, AED) with dlib's 68-point landmarks and 128-d identity
embeddings (dlib-bin + face-recognition-models: both install from PyPI and run offline)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

DETECT_SIDE_PX = 256  # frames are enlarged to this before dlib's HOG detector (it misses small faces)
LANDMARKS_FILE = "shape_predictor_68_face_landmarks.dat"
EMBEDDING_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def models_dir() -> Path | None:
    """face-recognition-models' data folder, found without importing it (it needs
    pkg_resources, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return folder if (folder / LANDMARKS_FILE).is_file() else None


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("dlib") is None:
        return "needs dlib: pip install dlib-bin face-recognition-models"
    if models_dir() is None:
        return "needs dlib's models: pip install face-recognition-models"
    return None


@dataclass
class FaceMeasure:
    landmarks: np.ndarray | None  # (68, 2) in pixels of the frame given
    embedding: np.ndarray | None  # (128,)


class DlibFaces:
    name = "dlib-68"

    def __init__(self):
        import dlib

        folder = models_dir()
        self.detector = dlib.get_frontal_face_detector()
        self.shapes = dlib.shape_predictor(str(folder / LANDMARKS_FILE))
        self.encoder = dlib.face_recognition_model_v1(str(folder / EMBEDDING_FILE))

    def __call__(self, frame: np.ndarray) -> FaceMeasure:
        """Landmarks and identity of the largest face in an RGB uint8 frame, or Nones."""
        scale = DETECT_SIDE_PX / max(frame.shape[:2])
        image = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC) \
            if scale > 1 else np.ascontiguousarray(frame)
        scale = max(scale, 1.0)
        faces = self.detector(image, 1)
        if not faces:
            return FaceMeasure(None, None)
        face = max(faces, key=lambda r: r.width() * r.height())
        shape = self.shapes(image, face)
        points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64) / scale
        embedding = np.array(self.encoder.compute_face_descriptor(image, shape))
        return FaceMeasure(points, embedding)


@dataclass
class FaceScores:
    """Running sums of AKD (pixels), MKR (share) and AED over pairs of frames."""

    distances: list[float] = field(default_factory=list)
    identities: list[float] = field(default_factory=list)
    real_found: int = 0
    missing: int = 0

    def add(self, real: FaceMeasure, generated: FaceMeasure) -> None:
        if real.landmarks is None:
            return  # the paper counts only frames where the real face is found
        self.real_found += 1
        if generated.landmarks is None:
            self.missing += 1
            return
        self.distances.append(float(np.linalg.norm(real.landmarks - generated.landmarks,
                                                   axis=1).mean()))
        self.identities.append(float(np.linalg.norm(real.embedding - generated.embedding)))

    def result(self) -> dict[str, float | str]:
        if not self.real_found:
            reason = "no face found in the real frames"
            return {"akd": reason, "mkr": reason, "aed": reason}
        mkr = self.missing / self.real_found
        if not self.distances:
            reason = "no face found in any generated frame"
            return {"akd": reason, "mkr": mkr, "aed": reason}
        return {"akd": float(np.mean(self.distances)), "mkr": mkr,
                "aed": float(np.mean(self.identities))}
