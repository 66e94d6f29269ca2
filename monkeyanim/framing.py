"""What a model sees of each frame: its crop (a face found, a box given, or the centred
square), fitted to the model's frame size, in batches read ahead in a background thread."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from .errors import InputError, NoFaceError
from .faces import (TRACK_DETECT_EVERY, Box, crop_box, get_detector, parse_crop,
                    track_faces)
from .models import MonkeyNet
from .pipeline import to_tensor
from .video import VideoReader, check_batch_size, fit_frame, prefetch


# a face unseen for this long in a video cropped to it gets a warning
FACELESS_S = 2.0


def crop_mode(spec, model: MonkeyNet):
    """'auto', None (centred square) or a box, from what ``parse_crop`` takes (InputError
    for anything else); not given (None): 'auto' for face checkpoints."""
    spec = parse_crop(spec)
    if spec is None:
        return "auto" if model.provenance.get("face_model") else None
    return None if spec == "none" else spec


def video_crops(reader: VideoReader, mode
                ) -> tuple[Callable[[int], Box | None], str | None, list[str]]:
    """The crop box of each frame index, the face detector used (if any), and the warnings
    for the user: one where the face was not seen for a while (it left the frame, turned
    away...)."""
    if mode != "auto":
        return (lambda index: mode), None, []
    detector = get_detector()
    try:
        track, count = track_faces(reader.frames(), detector)
    except NoFaceError:  # (a frame that cannot be read says so itself)
        raise InputError(f"no face found in {reader.path.name} ({detector.name}); use --crop "
                         "none or x,y,w,h") from None
    first, last = faceless(track.found, count)
    fps = float(reader.fps)
    notes = [f"no face seen in {reader.path.name} from {first / fps:.1f} s to "
             f"{(last + 1) / fps:.1f} s ({detector.name}): the crop holds where the face was, "
             "and what moves there is not a face"] if last - first + 1 >= FACELESS_S * fps else []
    return track.__getitem__, detector.name, notes


def faceless(found: tuple[int, ...], count: int) -> tuple[int, int]:
    """The longest run of frames (first, last) of ``count`` between the frames where the
    face was found (detections come every TRACK_DETECT_EVERY frames); (0, -1) for none."""
    edges = [-TRACK_DETECT_EVERY, *sorted(found), count]
    first, last = max(((a + TRACK_DETECT_EVERY, b - 1) for a, b in zip(edges, edges[1:])),
                      key=lambda run: run[1] - run[0])
    return (first, last) if last >= first else (0, -1)


def source_crop(image: np.ndarray, mode, path: Path
                ) -> tuple[Box | None, str | None, str | None]:
    """The box to cut from a source image (H, W, 3) uint8 as ``mode`` says (see crop_mode),
    the face detector used (if any) and a note for the user where it found several faces
    (the largest is taken: see Detector.in_photo)."""
    if mode != "auto":
        return mode, None, None
    detector = get_detector()
    faces = detector.in_photo(image)
    if not faces:
        raise InputError(f"no face found in {path.name} ({detector.name}); use --crop none, "
                         "or its box as --crop x,y,w,h (in animate, with --driving-crop for "
                         "the driving video's)")
    box = crop_box(faces[0], *image.shape[:2])  # the largest
    note = (f"{len(faces)} faces found in {path.name} ({detector.name}); the largest was "
            f"taken, cropped as {','.join(map(str, box))}: give --crop x,y,w,h for another"
            if len(faces) > 1 else None)
    return box, detector.name, note


def frame_batches(reader: VideoReader, size: tuple[int, int], batch_size: int,
                  crop_at: Callable[[int], Box | None] = lambda index: None,
                  device="cpu") -> Iterator[tuple[list[np.ndarray], torch.Tensor]]:
    """Decoded (in a background thread), fitted frames in batches: (list of (H, W, 3) uint8,
    tensor (B, 3, H, W)). ``crop_at(index)`` gives each frame's box (None: centred square)."""
    check_batch_size(batch_size)
    fitted = (fit_frame(frame, size, crop_at(i), f"frame {i} of {reader.path.name}")
              for i, frame in enumerate(reader.frames()))
    batch: list[np.ndarray] = []
    for frame in prefetch(fitted):
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch, to_tensor(batch, device)
            batch = []
    if batch:
        yield batch, to_tensor(batch, device)
