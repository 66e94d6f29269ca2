"""Which face detector should `--crop auto` and `monkeyanim crop` use? Accuracy, speed and box
framing of the detectors that run offline, on frames of the real, uncropped talking-face videos
in ../shared/datasets/faces (224 px to 1080p; small faces are the hard case: `--shrink 0.35`
puts the picture, smaller, in the middle of a grey frame of its own size).

There are no hand-made boxes, so each frame's face is the one most detectors agree on (centres
within half a face side): a detector "finds" the face when its largest box (the one the crop
uses) is that face, "misses" it when it returns nothing, and is "wrong" when its largest box is
elsewhere (the crop would cut the wrong place). The framing columns compare each detector's raw
boxes with the Haar cascade's on the faces both find (medians): monkeyanim.faces maps boxes
onto the Haar framing with these numbers. Detectors that are not installed are listed as such.
dlib's CNN (mmod, in face-recognition-models) was measured once and left out: 116/116 at full
size but 68/116 shrunk, at 2 s a frame. Prints a table; compare runs as ratios.
    python benchmarks/face_detectors.py [--per-video 3] [--shrink 1] [--data DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import cv2
import numpy as np

from monkeyanim.faces import Box, DlibHogDetector, HaarDetector, MediapipeFaceDetector
from monkeyanim.video import open_video

ROOT = Path(__file__).resolve().parents[1]
SMALL_FACE = 0.1  # a face whose side is under this share of the frame's longer side is "small"
MATCH = 0.5  # boxes agree when their centres are closer than this share of the mean side


def detectors() -> tuple[list, dict[str, str]]:
    made, missing = [HaarDetector()], {}
    for module, make in (("dlib", DlibHogDetector), ("mediapipe", MediapipeFaceDetector)):
        if importlib.util.find_spec(module) is None:
            missing[make.name] = f"{module} is not installed"
        else:
            made.append(make())
    return made, missing


def shrink(frame: np.ndarray, factor: float) -> np.ndarray:
    """The frame scaled by ``factor`` in the middle of a grey canvas of its own size."""
    if factor == 1:
        return frame
    height, width = frame.shape[:2]
    small = cv2.resize(frame, None, fx=factor, fy=factor, interpolation=cv2.INTER_AREA)
    canvas = np.full_like(frame, 128)
    top, left = (height - small.shape[0]) // 2, (width - small.shape[1]) // 2
    canvas[top:top + small.shape[0], left:left + small.shape[1]] = small
    return canvas


def sample_frames(data: Path, per_video: int):
    """``per_video`` evenly spaced frames of each video, (H, W, 3) uint8."""
    for path in sorted(data.iterdir()):
        reader = open_video(path)
        wanted = set(np.linspace(0, reader.num_frames - 1, per_video).round().astype(int))
        for index, frame in enumerate(reader.frames()):
            if index in wanted:
                yield frame
            if index >= max(wanted):
                break


def agree(a: Box, b: Box) -> bool:
    side = (a[2] + a[3] + b[2] + b[3]) / 4
    return abs(a[0] + a[2] / 2 - b[0] - b[2] / 2) ** 2 + \
        abs(a[1] + a[3] / 2 - b[1] - b[3] / 2) ** 2 < (MATCH * side) ** 2


def largest(boxes: list[Box]) -> Box | None:
    return max(boxes, key=lambda b: b[2] * b[3]) if boxes else None


def consensus(picks: list[Box | None]) -> Box | None:
    """The pick that most detectors agree with (at least two), else None."""
    best, support = None, 1
    for box in filter(None, picks):
        count = sum(other is not None and agree(box, other) for other in picks)
        if count > support:
            best, support = box, count
    return best


def framing(box: Box, haar: Box) -> tuple[float, float, float]:
    """Haar's side over this box's side, and Haar's centre minus this box's, in its side."""
    side = (box[2] + box[3]) / 2
    return ((haar[2] + haar[3]) / 2 / side, (haar[0] + haar[2] / 2 - box[0] - box[2] / 2) / side,
            (haar[1] + haar[3] / 2 - box[1] - box[3] / 2) / side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/datasets/faces")
    parser.add_argument("--per-video", type=int, default=3)
    parser.add_argument("--shrink", type=float, default=1.0)
    args = parser.parse_args()
    made, missing = detectors()
    rows = {d.name: {"found": 0, "missed": 0, "wrong": 0, "small": 0, "seconds": 0.0,
                     "framing": []} for d in made}
    frames = small = unsure = 0
    for frame in sample_frames(args.data, args.per_video):
        frame, picks = shrink(frame, args.shrink), []
        for detector in made:
            start = time.perf_counter()
            picks.append(largest(detector.raw(frame)))
            rows[detector.name]["seconds"] += time.perf_counter() - start
        truth, frames = consensus(picks), frames + 1
        if truth is None:
            unsure += 1
            continue
        is_small = truth[2] < SMALL_FACE * max(frame.shape[:2])
        small += is_small
        for detector, pick in zip(made, picks):
            row = rows[detector.name]
            outcome = "missed" if pick is None else "found" if agree(pick, truth) else "wrong"
            row[outcome] += 1
            row["small"] += is_small and outcome == "found"
            if outcome == "found" and picks[0] is not None and agree(picks[0], truth):
                row["framing"].append(framing(pick, picks[0]))
    print(f"shrink {args.shrink}: {frames} frames, {frames - unsure} with an agreed face "
          f"({small} small: side under {SMALL_FACE:.0%} of the frame), {unsure} without")
    print(f"{'detector':<22}{'found':>6}{'missed':>7}{'wrong':>6}{'small found':>13}"
          f"{'ms/frame':>9}   Haar framing: side x, centre +x, +y (in own side)")
    for name, row in rows.items():
        scale, dx, dy = np.median(np.array(row["framing"]), axis=0) if row["framing"] \
            else (float("nan"),) * 3
        print(f"{name:<22}{row['found']:>6}{row['missed']:>7}{row['wrong']:>6}"
              f"{row['small']:>7} / {small:<4}{1000 * row['seconds'] / frames:>8.0f}"
              f"   {scale:.3f}, {dx:+.3f}, {dy:+.3f}")
    for name, reason in missing.items():
        print(f"{name:<22}not measured: {reason}")


if __name__ == "__main__":
    main()
