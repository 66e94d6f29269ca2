"""How low a reconstruction L1 can a model reach by warping its source alone?

For each test video, every frame is rebuilt from the first by OpenCV's DIS optical flow
computed from that very frame back to the first: a warp that has seen its target, which no
model has. What it leaves (occlusions, new pixels, what a flow cannot move) is what the
generator has to paint; where the bar lies below it, warping better cannot reach the bar.

    python training/oracle_flow.py .gpu/data/taichi/test --size 64
    python training/oracle_flow.py runs/faces-eval/test --size 128

Prints one row per video (frames, static-source L1, oracle-warp L1, their ratio) and the
means as `monkeyanim evaluate` takes them (per video, then over videos). Frames are read and
fitted as `evaluate --crop none` reads them (centred square, resized).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monkeyanim.data import list_videos  # noqa: E402
from monkeyanim.video import fit_frame, open_video  # noqa: E402

# DIS at its medium preset, refined down to every pixel: the finest flow OpenCV offers here
# (medium alone leaves 0.089 on taichi's test clips, this 0.075).
DIS_REFINE_ITERATIONS = 10


def oracle_flow() -> cv2.DISOpticalFlow:
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow.setFinestScale(0)
    flow.setVariationalRefinementIterations(DIS_REFINE_ITERATIONS)
    return flow


def warp_to(first: np.ndarray, frame: np.ndarray, flow: cv2.DISOpticalFlow) -> np.ndarray:
    """``first`` (H, W, 3) uint8 warped onto ``frame`` by the flow from ``frame`` to it."""
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in (frame, first)]
    offsets = flow.calc(grey[0], grey[1], None)  # (H, W, 2): where each pixel sits in first
    rows, cols = np.mgrid[0:frame.shape[0], 0:frame.shape[1]].astype(np.float32)  # (H, W) each
    return cv2.remap(first, cols + offsets[..., 0], rows + offsets[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def l1(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two uint8 frames, in [0, 1]."""
    return float(np.abs(a.astype(np.float32) - b).mean() / 255)


def video_errors(path: Path, size: int, flow: cv2.DISOpticalFlow) -> tuple[int, float, float]:
    """(frames, static-source L1, oracle-warp L1) of one video, pixels in [0, 1]."""
    first, static, warped, count = None, 0.0, 0.0, 0
    for frame in open_video(path).frames():
        frame = fit_frame(frame, (size, size))  # (H, W, 3) uint8
        if first is None:
            first = frame
        static += l1(first, frame)
        warped += l1(warp_to(first, frame, flow), frame)
        count += 1
    return count, static / count, warped / count


def row(name: str, frames: str, static: float, warped: float) -> str:
    """One line of the table; the ratio is '-' for a clip that does not move at all."""
    ratio = f"{warped / static:6.2f}" if static > 0 else f"{'-':>6}"
    return f"{name[:40]:<40} {frames:>6} {static:7.4f} {warped:7.4f} {ratio}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="test videos (or DATA_DIR with test/)")
    parser.add_argument("--size", type=int, required=True, help="the checkpoint's frame side")
    args = parser.parse_args(argv)
    folder = args.folder / "test" if (args.folder / "test").is_dir() else args.folder
    videos, flow, rows = list_videos(folder), oracle_flow(), []
    print(f"{'video':<40} {'frames':>6} {'static':>7} {'oracle':>7} {'ratio':>6}")
    for path in videos:
        count, static, warped = video_errors(path, args.size, flow)
        rows.append((static, warped))
        print(row(path.name, str(count), static, warped))
    static, warped = (float(np.mean([r[i] for r in rows])) for i in (0, 1))
    print(row("mean", "", static, warped))


if __name__ == "__main__":
    from monkeyanim.errors import MonkeyAnimError

    try:
        main()
    except MonkeyAnimError as error:  # a missing folder, an unreadable video: one line
        raise SystemExit(f"error: {error}") from None
