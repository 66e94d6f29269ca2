"""Run under torchrun by tests/test_train.py: a few DDP iterations, then each rank saves its
weights so the test can check that all ranks agree."""

import sys
from pathlib import Path

import torch

from monkeyanim.train import Trainer, finish
from monkeyanim.trainconfig import load_train_config

data, run, config = sys.argv[1:4]
model_config, train_config = load_train_config(config)
trainer = Trainer(Path(data), Path(run), model_config, train_config, device="cpu")
trainer.run()
torch.save(trainer.model.state_dict(), Path(run) / f"rank{trainer.rank}.pt")
finish(trainer)
