"""Speed and memory of `animate` against the authors' frame-by-frame loop.

Prints a table; compare runs as ratios (absolute numbers depend on the machine).
    python benchmarks/animate.py [--frames 64] [--threads 2] [--batch 32] [--device cuda]
        [--precisions fp32,bf16] [--memory-only | --speed-only] [--long 5000] [--plain-malloc]
On CUDA the table adds fp16; peak RSS is measured on the CPU only (the memory runs animate
a --long video through the CLI, and take minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from monkeyanim.checkpoint import save_checkpoint
from monkeyanim.models import build_model
from monkeyanim.native import keep_freed_memory
from monkeyanim.pipeline import Animator, relative_keypoints
from monkeyanim.presets import get_preset

SEED = 0
PHOTO = (4000, 3000)  # a phone photo's pixels, width x height: --paste-back's output


def moving_frames(count: int, size: int) -> torch.Tensor:
    """A rendered clip: a textured disc moving over a gradient, (T, 3, S, S) in [0, 1]."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    frames = []
    for t in range(count):
        cx, cy = 0.5 * np.cos(t / 7), 0.4 * np.sin(t / 5)
        disc = (((x - cx) ** 2 + (y - cy) ** 2) < 0.12).float()
        frames.append(torch.stack([0.3 + 0.3 * x + 0.6 * disc, 0.5 + 0.2 * y,
                                   0.4 + 0.5 * disc * torch.sin(8 * x)]).clamp(0, 1))
    return torch.stack(frames)


def model_at(size: int, device: str = "cpu"):
    torch.manual_seed(SEED)
    config = dataclasses.replace(get_preset("taichi"), frame_size=(size, size))
    return build_model(config, with_discriminator=False).eval().to(device)


@torch.no_grad()
def naive(model, source: torch.Tensor, driving: torch.Tensor) -> torch.Tensor:
    """The authors' way: every frame alone, the source re-encoded every time."""
    outputs, first = [], model.kp_detector(driving[:1])
    for frame in driving:
        kp_source = model.kp_detector(source[None])
        kp = relative_keypoints(kp_source, model.kp_detector(frame[None]), first)
        outputs.append(model.generator(source[None], kp_source, kp).frames)
    return torch.cat(outputs)


def ours(model, source, driving, batch: int, precision: str = "fp32") -> torch.Tensor:
    model = model.to(memory_format=torch.channels_last)
    animator = Animator(model, source, precision=precision)
    return torch.cat([animator(driving[i:i + batch]) for i in range(0, len(driving), batch)])


def timed(fn, device: str):
    """fn's result and its seconds; a warm-up call first on CUDA (kernel selection, caches)."""
    if device == "cuda":
        fn()
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def speed_rows(frames: int, batch: int, device: str, precisions: list[str]) -> list[tuple]:
    rows = []
    for size in (64, 256):
        count = frames if size == 64 else max(8, frames // 4)
        model, clip = model_at(size, device), moving_frames(count + 1, size).to(device)
        source, driving = clip[0], clip[1:]
        reference, t_naive = timed(lambda: naive(model, source, driving), device)
        for precision in precisions:
            made, seconds = timed(lambda: ours(model, source, driving, batch, precision), device)
            rows.append((f"{size}x{size}", precision, count / t_naive, count / seconds,
                         t_naive / seconds, (made.float() - reference).abs().max().item()))
    return rows


def peak_rss_mb(frames: int, workdir: Path, checkpoint: Path,
                photo: tuple[int, int] | None = None) -> tuple[float, float]:
    """Peak RSS (MB) and frames/s of a real `monkeyanim animate` run over a rendered video of
    ``frames``; with ``photo`` (width, height), pasted back onto a source of that size."""
    from monkeyanim.videowriter import VideoWriter
    video = workdir / f"drive{frames}.mp4"
    clip = (moving_frames(frames, 64).permute(0, 2, 3, 1) * 255).byte().numpy()
    if not video.exists():
        with VideoWriter(video, 25) as writer:
            for frame in clip:
                writer.write(frame)
    source = workdir / "source.png"
    import cv2
    first = clip[0][..., ::-1]  # (H, W, 3) BGR
    cv2.imwrite(str(source), cv2.resize(first, photo, interpolation=cv2.INTER_CUBIC)
                if photo else first)
    extra = ["--paste-back"] if photo else []
    # VmHWM belongs to the process's own memory map; ru_maxrss would inherit this parent's peak
    code = ("import sys, atexit; from monkeyanim.cli import main; sys.argv = sys.argv[1:]; "
            "atexit.register(lambda: print('RSS', [l.split()[1] for l in open('/proc/self/status')"
            " if l.startswith('VmHWM')][0], file=sys.stderr)); main()")
    result = subprocess.run([sys.executable, "-c", code, "monkeyanim", "animate", str(source),
                             str(video), "-o", str(workdir / f"out{frames}.mp4"), "-c",
                             str(checkpoint), "--overwrite", *extra], capture_output=True,
                            text=True)
    line = [l for l in result.stderr.splitlines() if l.startswith("RSS")]
    if result.returncode != 0 or not line:
        raise SystemExit(result.stderr)
    # stdout: "wrote OUT (N frames made in S s, R frames/s)"
    rate = float(result.stdout.split(" frames/s")[0].rsplit(", ", 1)[1])
    return int(line[0].split()[1]) / 1024, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=64,
                        help="driving frames of the speed table (a quarter of it at 256x256)")
    parser.add_argument("--batch", type=int, default=32, help="frames per network call")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)),
                        help="torch threads (default: OMP_NUM_THREADS, else 2)")
    parser.add_argument("--long", type=int, default=5000,
                        help="frames of the long video of the memory runs")
    parser.add_argument("--memory-only", action="store_true", help="skip the speed table")
    parser.add_argument("--speed-only", action="store_true",
                        help="skip the memory runs (minutes: a --long video, a paste-back)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run")
    parser.add_argument("--precisions", help="comma-separated; default fp32,bf16 (+fp16 on CUDA)")
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc settings alone (the CLI tunes them)")
    args = parser.parse_args()
    tuned = not args.plain_malloc and keep_freed_memory()
    precisions = (args.precisions.split(",") if args.precisions else
                  ["fp32", "bf16"] + (["fp16"] if args.device == "cuda" else []))
    torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{args.threads} thread(s)"
    print(f"torch {torch.__version__}, {where}, taichi widths, batch {args.batch}, "
          f"malloc {'kept' if tuned else 'plain'}")
    if not args.memory_only:
        print(f"{'size':>8} {'prec':>5} {'naive f/s':>10} {'ours f/s':>9} {'speed-up':>9} "
              f"{'max diff':>9}")
        for size, prec, slow, fast, ratio, diff in speed_rows(args.frames, args.batch,
                                                              args.device, precisions):
            print(f"{size:>8} {prec:>5} {slow:10.1f} {fast:9.1f} {ratio:8.2f}x {diff:9.1e}")
    if args.device != "cpu" or args.speed_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "taichi64.safetensors"
        save_checkpoint(model_at(64), checkpoint)
        (short, _), (long, _) = (peak_rss_mb(100, Path(tmp), checkpoint),
                                 peak_rss_mb(args.long, Path(tmp), checkpoint))
        pasted, rate = peak_rss_mb(100, Path(tmp), checkpoint, PHOTO)
    print(f"peak RSS: {short:.0f} MB at 100 frames, {long:.0f} MB at {args.long} frames "
          f"(ratio {long / short:.2f})")
    print(f"--paste-back onto a {PHOTO[0]}x{PHOTO[1]} photo, 100 frames: {rate:.1f} frames/s, "
          f"peak RSS {pasted:.0f} MB")


if __name__ == "__main__":
    main()
