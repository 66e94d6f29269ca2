"""Seconds per training iteration on CPU for the shapes and actions presets.

Prints a table (fp32 / bf16, channels_last as the trainer uses it); compare runs as ratios.
    python benchmarks/train.py [--data ../shared/datasets] [--iterations 5] [--threads 2]
        [--plain-malloc]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile

from pathlib import Path

import torch

from monkeyanim.native import keep_freed_memory
from monkeyanim.train import Trainer
from monkeyanim.trainconfig import train_preset


def seconds_per_iteration(data: Path, preset: str, precision: str, iterations: int) -> float:
    model_config, train_config = train_preset(preset)
    train_config = dataclasses.replace(train_config, iterations=iterations + 1, num_workers=0,
                                       checkpoint_every=10 ** 9, sample_every=10 ** 9)
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(data, Path(run) / "run", model_config, train_config, "cpu", precision)
        times = []
        trainer.run(lambda step: times.append(step.seconds_per_iteration))
    return sum(times[1:]) / len(times[1:])  # the first iteration warms up oneDNN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    root = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
    parser.add_argument("--data", type=Path, default=root)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    parser.add_argument("--plain-malloc", action="store_true",
                        help="leave glibc's malloc settings alone (the CLI tunes them)")
    args = parser.parse_args()
    tuned = not args.plain_malloc and keep_freed_memory()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), authors' batch sizes, "
          f"malloc {'kept' if tuned else 'plain'}")
    print(f"{'preset':>8} {'batch':>6} {'precision':>9} {'s/iteration':>12}")
    for preset in ("shapes", "actions"):
        batch = train_preset(preset)[1].batch_size
        for precision in ("fp32", "bf16"):
            seconds = seconds_per_iteration(args.data / preset, preset, precision, args.iterations)
            print(f"{preset:>8} {batch:>6} {precision:>9} {seconds:12.2f}")


if __name__ == "__main__":
    main()
