"""Run under torchrun by tests/test_train.py: a few DDP iterations, then each rank saves its
weights so the test can check that all ranks agree. With a 4th argument N, rank 1 alone asks
to stop after iteration N."""

import sys
from pathlib import Path

import torch

from monkeyanim.train import Trainer, finish
from monkeyanim.trainconfig import load_train_config

data, run, config = sys.argv[1:4]
stop_after = int(sys.argv[4]) if len(sys.argv) > 4 else None
model_config, train_config = load_train_config(config)
trainer = Trainer(Path(data), Path(run), model_config, train_config, device="cpu")
trainer.run(should_stop=lambda: trainer.rank == 1 and trainer.iteration == stop_after)
assert trainer.stopped_early == (stop_after is not None), trainer.iteration
torch.save(trainer.model.state_dict(), Path(run) / f"rank{trainer.rank}.pt")
finish(trainer)
