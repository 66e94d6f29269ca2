"""The C allocator's settings: freed memory kept for the next batch instead of new zeroed pages."""

import statistics
import subprocess
import sys
from pathlib import Path

import pytest

CONFIG = Path(__file__).resolve().parents[1] / "training" / "taichi64.yaml"

# Five training steps of a real model (taichi64's keypoint detector and generator, batch 2)
# after two warm-up steps (the heap settles in the first two); prints the page faults of each.
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
step()
for _ in range(5):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults_per_step(mode: str) -> int:
    """The median over the measured steps: a step now and then still grows the heap (a
    one-off 1,000-8,000 faults in CI), which says nothing about the steady state."""
    result = subprocess.run([sys.executable, "-c", WORKLOAD, mode], capture_output=True,
                            text=True, check=True)
    return int(statistics.median(int(line) for line in result.stdout.split()))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_keep_freed_memory_spares_the_kernel_most_page_faults():
    default, kept = page_faults_per_step("default"), page_faults_per_step("kept")
    # measured here: about 10,000 against 0 per step (each fault is a zeroed 4 KiB page)
    assert kept < default / 4, (kept, default)
