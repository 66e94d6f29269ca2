"""The C allocator's settings: freed memory kept for the next batch instead of new zeroed pages."""

import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "training" / "taichi64.yaml"

# Three training steps of a real model (taichi64's keypoint detector and generator, batch 2)
# after one warm-up step; prints the page faults those three steps took.
WORKLOAD = f"""
import resource, sys, torch
from monkeyanim.models import build_model
from monkeyanim.native import keep_freed_memory
from monkeyanim.trainconfig import load_train_config
torch.set_num_threads(1)
if sys.argv[1] == "kept":
    assert keep_freed_memory()
model = build_model(load_train_config({str(CONFIG)!r})[0], with_discriminator=False)
frames = torch.rand(2, 3, 64, 64)
def step():
    kp = model.kp_detector(frames)
    model.generator(frames, kp, kp).frames.mean().backward()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True,
                            text=True, check=True)
    return int(result.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_spares_the_kernel_most_page_faults():
    default, kept = page_faults("default"), page_faults("kept")
    # measured here: 25,000 against 7,000 (each fault is a zeroed 4 KiB page)
    assert kept < default / 2, (kept, default)
