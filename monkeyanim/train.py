"""Self-supervised training (the paper's procedure): reconstruct one frame of a video from
another, with an LSGAN and discriminator feature matching. Single process or DDP (torchrun)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from .checkpoint import MODEL_FILE, STATE_FILE, checkpoint_bytes, load_checkpoint
from .config import ModelConfig, check_discriminator, check_rgb
from .data import (EndlessSampler, PairDataset, init_worker, iterations_per_epoch,
                   training_folder)
from .errors import InputError, cannot_write
from .files import atomic_write, atomic_write_all
from .finetune import freeze_all_but, load_initial_weights
from .losses import DeformedReconstruction, DiscriminatorGAN, FeatureMatching, GeneratorGAN
from .models import Keypoints, MonkeyNet, build_model
from .pipeline import check_precision, precision_context
from .runstate import (CONFIG_FILE, LOG_FILE, RunLock, check_outside, check_run_dir,
                       divergence_error, fresh_start, make_run_dir, remove_stale_temps,
                       restore_state, state_bytes, trim_log, write_sample)
from .trainconfig import TrainConfig, check_feature_matching
from .validation import BEST_FILE, TEST_SPLIT, VAL_SPLIT, HeldOut, KeepBest

LR_DROP = 0.1  # the learning rate is multiplied by this at each milestone (the authors')
NETWORKS = ("kp_detector", "generator", "discriminator")


@dataclass
class Step:
    """One finished iteration, as the trainer reports it: each loss by name, and its speed."""

    iteration: int
    total: int
    losses: dict[str, float]
    seconds_per_iteration: float
    val_l1: float | None = None  # held-out L1, at the iterations where it was measured


def _distributed() -> tuple[int, int]:
    """(rank, world size), initialising the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


class Trainer:
    """Owns the model, optimizers, schedulers and run directory of one training run."""

    def __init__(self, data_dir: Path, run_dir: Path, model_config: ModelConfig,
                 train_config: TrainConfig, device: str = "cpu", precision: str = "fp32",
                 resume: bool = False, init: MonkeyNet | None = None):
        self.lock = RunLock(Path(run_dir), active=False)  # rank 0's, once known
        try:
            self._setup(Path(data_dir), Path(run_dir), model_config, train_config, device,
                        precision, resume, init)
        except BaseException:  # (a notebook keeps the failed object alive: not its lock)
            self.lock.release(discard=True)
            raise

    def _setup(self, data_dir: Path, run_dir: Path, model_config: ModelConfig,
               train_config: TrainConfig, device: str, precision: str, resume: bool,
               init: MonkeyNet | None) -> None:
        """The Trainer's body (see __init__), apart so that a start that fails lets go of
        the run folder's lock: ranks, data, networks, optimizers, and the saved state where
        the run resumes."""
        self.rank, self.world = _distributed()
        self.lock.active = self.rank == 0
        self.run_dir, self.cfg, self.precision = Path(run_dir), train_config, precision
        if self.world > 1 and device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
            torch.cuda.set_device(device)
        self.device = torch.device(device)
        self._check_start(data_dir, model_config, resume)
        torch.manual_seed(train_config.seed)
        self.dataset = PairDataset(training_folder(data_dir), model_config.frame_size,
                                   train_config.augmentation, train_config.num_repeats,
                                   train_config.seed)
        if len(self.dataset) < self.world:  # a rank without a video would wait forever
            raise InputError(f"{len(self.dataset)} training video(s) for {self.world} "
                             "processes: each process needs one of its own; run fewer")
        self.keep_best = self._keep_best(Path(data_dir), model_config.frame_size, resume)
        per_epoch = iterations_per_epoch(len(self.dataset) // self.world, train_config.batch_size)
        self.total, self.milestones = train_config.schedule(per_epoch)
        self.model = self._build(model_config, data_dir, init)
        self.optimizers = self._optimizers()
        self.schedulers = {name: torch.optim.lr_scheduler.MultiStepLR(opt, self.milestones,
                                                                      LR_DROP)
                           for name, opt in self.optimizers.items()}
        self.iteration, self.stopped_early = 0, False
        self.saved_iteration: int | None = None  # of the checkpoint on disk, on every rank
        if self.rank == 0 and not resume:
            make_run_dir(self.run_dir)
        self.lock.hold()  # a folder that was still to be made, now made
        if self.rank == 0:
            remove_stale_temps(self.run_dir, (MODEL_FILE, STATE_FILE, BEST_FILE))
        if resume:
            self._resume()
        if self.rank == 0:  # a resumed run's too: what the command line changed carries on
            self._write_config(model_config)
            trim_log(self.run_dir / LOG_FILE, self.iteration if resume else None)
        self.nets = self._wrap()
        self.feature_matching = FeatureMatching(train_config.feature_matching)
        self.generator_gan = GeneratorGAN(train_config.generator_gan)
        self.discriminator_gan = DiscriminatorGAN(train_config.discriminator_gan)
        self.deformed = DeformedReconstruction(train_config.reconstruction_deformed)

    def _check_start(self, data_dir: Path, model_config: ModelConfig, resume: bool) -> None:
        """What can be refused before the data is read: the settings, and where the run
        goes (its folder locked first: another run may write its files)."""
        check_precision(self.precision, self.device)
        check_rgb(model_config)
        check_discriminator(model_config)
        check_feature_matching(self.cfg, model_config)
        check_outside(self.run_dir, training_folder(data_dir),
                      *(Path(data_dir) / split for split in (VAL_SPLIT, TEST_SPLIT)))
        self.lock.hold()
        check_run_dir(self.run_dir, resume, (BEST_FILE,))

    def _build(self, model_config: ModelConfig, data_dir: Path,
               init: MonkeyNet | None) -> MonkeyNet:
        """The model on the device, from ``init``'s weights where given, with what
        ``train.trainable`` leaves out frozen."""
        model = build_model(model_config, provenance={"data": str(data_dir)})
        if init is not None:
            load_initial_weights(model, init)
        model = model.to(self.device).to(memory_format=torch.channels_last)
        if self.cfg.trainable is not None:
            freeze_all_but(model, self.cfg.trainable)
        return model

    def _keep_best(self, data_dir: Path, size: tuple[int, int], resume: bool) -> KeepBest | None:
        """What validates the run on DATA/val/ (rank 0 alone: the others go on meanwhile and
        wait for it at the next gradient exchange), or None without train.validate_every."""
        if not self.cfg.validate_every or self.rank != 0:
            return None
        return KeepBest(HeldOut(data_dir / VAL_SPLIT, size), self.run_dir / BEST_FILE,
                        self.precision, carry_on=resume)

    def _optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam per network with something to train: a network left wholly fixed
        (``train.trainable``) has none and takes no step."""
        optimizers = {}
        for name in NETWORKS:
            params = [p for p in getattr(self.model, name).parameters() if p.requires_grad]
            if params:
                optimizers[name] = torch.optim.Adam(params, lr=self.cfg.lr,
                                                    betas=self.cfg.adam_betas)
        return optimizers

    def _write_config(self, model_config: ModelConfig) -> None:
        """config.json: the architecture and the training settings as they now stand."""
        document = {"model": model_config.to_dict(), "train": dataclasses.asdict(self.cfg)}
        atomic_write(self.run_dir / CONFIG_FILE,
                     lambda tmp: tmp.write_text(json.dumps(document, indent=2)))

    def _wrap(self) -> dict[str, torch.nn.Module]:
        nets = {name: getattr(self.model, name) for name in NETWORKS}
        if self.world == 1:
            return nets
        # DDP refuses a network with nothing to train; a fixed one needs no syncing anyway
        trained = {k: v for k, v in nets.items() if k in self.optimizers}
        if self.device.type == "cuda":
            trained = {k: torch.nn.SyncBatchNorm.convert_sync_batchnorm(v)
                       for k, v in trained.items()}
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nets | {k: DistributedDataParallel(v, device_ids=ids) for k, v in trained.items()}

    def loader(self) -> DataLoader:
        """An endless loader: epochs follow each other without restarting workers."""
        sampler = EndlessSampler(len(self.dataset), self.rank, self.world,
                                 self.cfg.seed + self.iteration)
        return DataLoader(self.dataset, batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.cfg.num_workers, worker_init_fn=init_worker)

    def step(self, pair: torch.Tensor) -> dict[str, float]:
        """One generator + keypoint-detector update, then one discriminator update (none
        when ``train.trainable`` leaves the discriminator fixed).

        pair: (B, 2, 3, H, W) in [0, 1]; frame 0 is the source, frame 1 the target.
        """
        pair = pair.to(self.device)
        batch = pair.shape[0]
        frames = pair.flatten(0, 1).contiguous(memory_format=torch.channels_last)  # (2B, 3, H, W)
        source, target = frames[0::2], frames[1::2]  # (B, 3, H, W) each
        with precision_context(self.precision, self.device):
            kp = self.nets["kp_detector"](torch.cat([source, target]))  # (2B, K, ...)
            kp = kp.float()
            kp_source, kp_target = kp[:batch], kp[batch:]
            gen_kp = (kp_source.detach(), kp_target.detach()) if self.cfg.detach_kp_generator \
                else (kp_source, kp_target)
            out = self.nets["generator"](source, *gen_kp)
            # real and fake in one discriminator call (instance norm is per sample)
            maps = self.nets["discriminator"](torch.cat([out.frames, target]),
                                              _twice(kp_target), _twice(kp_source))
            fake_maps = [m[:batch].float() for m in maps]
            real_maps = [m[batch:].float() for m in maps]
            losses = {"feature_matching": self.feature_matching(real_maps, fake_maps),
                      "gen_gan": self.generator_gan(fake_maps[-1])}
            if self.cfg.reconstruction_deformed:
                losses["rec_deformed"] = self.deformed(target, out.deformed.float())
        sum(losses.values()).backward(retain_graph=not self.cfg.detach_kp_discriminator)
        self._apply("generator", "kp_detector" if self.cfg.detach_kp_discriminator else None)
        if "discriminator" in self.optimizers:
            losses["disc_gan"] = self._discriminator_step(out.frames, target, kp_target, kp_source)
        self.last = (source, target, out)
        return {k: float(v.detach()) for k, v in losses.items()}

    def _discriminator_step(self, fake: torch.Tensor, real: torch.Tensor, kp_target: Keypoints,
                            kp_source: Keypoints) -> torch.Tensor:
        """LSGAN update of the discriminator on (B, 3, H, W) fake and real frames."""
        self.optimizers["discriminator"].zero_grad(set_to_none=True)
        with precision_context(self.precision, self.device):
            disc_kp = (kp_target.detach(), kp_source.detach()) if self.cfg.detach_kp_discriminator \
                else (kp_target, kp_source)
            maps = self.nets["discriminator"](torch.cat([fake.detach(), real]),
                                              _twice(disc_kp[0]), _twice(disc_kp[1]))
            scores = maps[-1].float()  # (2B, 1, h, w): fake then real
            loss = self.discriminator_gan(scores[fake.shape[0]:], scores[:fake.shape[0]])
        loss.backward()
        if not self.cfg.detach_kp_discriminator:
            self._average_kp_gradients()
        self._apply("discriminator", None if self.cfg.detach_kp_discriminator else "kp_detector")
        return loss

    def _average_kp_gradients(self) -> None:
        """Under DDP, the keypoint detector's gradients averaged over the processes: DDP
        averaged those of the generator's losses, but the discriminator's, a second backward
        through the same forward, stay each process's own (their detectors drifted apart).
        The first part being the same everywhere, the mean of the sums is the right sum."""
        if self.world == 1:
            return
        for param in self.nets["kp_detector"].parameters():
            if param.grad is not None:
                dist.all_reduce(param.grad, op=dist.ReduceOp.SUM)
                param.grad.div_(self.world)

    def set_lr(self, lr: float) -> None:
        """Set every optimizer's learning rate from now on (later drops divide this one;
        the schedulers read it back from the optimizers at their next step), and the base
        rate it stands for, the drops passed undone (what a later rebase_lr compares)."""
        for optimizer in self.optimizers.values():
            for group in optimizer.param_groups:
                group["lr"] = lr
        for scheduler in self.schedulers.values():
            scheduler.base_lrs = [lr / LR_DROP ** self._drops_passed()] * len(scheduler.base_lrs)

    def rebase_lr(self, lr: float) -> None:
        """A resumed run's base rate changed (by a --config): from now on ``lr`` less the
        drops the run has passed; a rate equal to the run's own changes nothing."""
        if math.isclose(next(iter(self.schedulers.values())).base_lrs[0], lr):
            return
        self.set_lr(lr * LR_DROP ** self._drops_passed())

    def _drops_passed(self) -> int:
        return sum(1 for milestone in self.milestones if milestone <= self.iteration)

    def current_lr(self) -> float:
        """The learning rate the next iteration runs at."""
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    def _apply(self, *names: str | None) -> None:
        for name in filter(lambda name: name in self.optimizers, names):
            self.optimizers[name].step()
            self.optimizers[name].zero_grad(set_to_none=True)

    def run(self, on_step: Callable[[Step], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> None:
        """Train until the total iteration count, checkpointing along the way and at the end.

        ``should_stop`` is asked after every iteration (Ctrl-C, a time limit); when it says
        yes on any rank, every rank stops after that same iteration, which is checkpointed,
        and ``stopped_early`` is set. With ``train.validate_every``, the start, that iteration
        and every validate_every-th are measured on DATA/val/ (``Step.val_l1``), the best kept.
        """
        self.model.train()
        for module in self.model.modules():
            if isinstance(module, _BatchNorm) and not any(p.requires_grad
                                                          for p in module.parameters()):
                module.eval()  # a fixed network's statistics stay fixed too
        if self.keep_best is not None and self.iteration == 0:  # the starting point is a candidate
            self._log({}, self.current_lr(), 0.0, None, self.keep_best(self.model, 0))
        start = time.perf_counter()
        batches = iter(self.loader())
        try:
            self._iterate(batches, on_step, should_stop)
        finally:
            # shut the loader's workers down now: they ignore SIGTERM (data.init_worker), and
            # an iterator kept alive by the traceback of a second Ctrl-C would leave them to
            # Python's exit, which terminates (SIGTERM) and waits on them forever. This is
            # what the iterator's own __del__ calls; a loader without workers has none.
            shutdown = getattr(batches, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
        self.elapsed = time.perf_counter() - start

    def _iterate(self, batches, on_step, should_stop) -> None:
        while self.iteration < self.total:
            tick = time.perf_counter()
            lr = self.current_lr()  # the rate this iteration runs at, logged with it
            losses = self.step(next(batches))
            for scheduler in self.schedulers.values():
                scheduler.step()
            self.iteration += 1
            seconds = time.perf_counter() - tick
            stop, diverged = self._any_rank(should_stop is not None and should_stop(),
                                            not all(map(math.isfinite, losses.values())))
            if diverged:  # before any save: the last checkpoint holds finite weights
                raise divergence_error(self.iteration, losses, self.run_dir / MODEL_FILE,
                                       self.saved_iteration)
            self.stopped_early = stop and self.iteration < self.total
            ends = stop or self.iteration == self.total
            if ends or self.iteration % self.cfg.checkpoint_every == 0:
                self._sync_buffers()
                self.save()
            self._log(losses, lr, seconds, on_step, self._validate(ends), ends)
            if ends or self.iteration % self.cfg.sample_every == 0:
                self.save_sample()
            if stop:
                break

    def _validate(self, ends: bool) -> float | None:
        """The held-out L1 where it is due (every validate_every-th iteration and the last
        one), the best weights kept; else None."""
        if self.keep_best is None or not (ends or self.iteration % self.cfg.validate_every == 0):
            return None
        return self.keep_best(self.model, self.iteration)

    def _any_rank(self, *flags: bool) -> tuple[bool, ...]:
        """Whether each flag is true on any rank: DDP ranks must stop after the same
        iteration, or the ones going on would wait for the others' gradients forever."""
        if self.world == 1:
            return flags
        vote = torch.tensor([float(flag) for flag in flags], device=self.device)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return tuple(bool(v) for v in vote.tolist())

    def _log(self, losses: dict[str, float], lr: float, seconds: float, on_step,
             val_l1: float | None = None, ends: bool = False) -> None:
        """A log.jsonl record every log_every iterations, at a validation, and at the last
        iteration (a stop's too: the one saved)."""
        if self.rank != 0:
            return
        if self.iteration % self.cfg.log_every == 0 or ends or val_l1 is not None:
            record = {"iteration": self.iteration, "seconds": round(seconds, 4), "lr": lr,
                      **losses}
            if val_l1 is not None:
                record["val_l1"] = val_l1
            try:
                with open(self.run_dir / LOG_FILE, "a") as log:
                    log.write(json.dumps(record) + "\n")
            except OSError as exc:  # disk full: stop here, the last checkpoint stays whole
                raise cannot_write(self.run_dir / LOG_FILE, exc) from exc
        if on_step:
            on_step(Step(self.iteration, self.total, losses, seconds, val_l1))

    def _sync_buffers(self) -> None:
        """Average BatchNorm running statistics over ranks, so every rank holds the same
        model (SyncBatchNorm, which would keep them equal, needs CUDA)."""
        if self.world == 1:
            return
        for buffer in self.model.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.world)

    def save(self) -> None:
        """Model (project format) and training state, written together atomically (a second
        Ctrl-C, a kill or a full disk leaves the previous pair, which --resume takes); rank 0
        only."""
        if not all(p.isfinite().all() for p in self.model.parameters()):
            # a NaN gradient's step, before its loss shows it
            raise divergence_error(self.iteration, {}, self.run_dir / MODEL_FILE,
                                   self.saved_iteration)
        self.saved_iteration = self.iteration  # every rank knows what is on disk
        if self.rank != 0:
            return
        self.model.provenance.update(iterations=self.iteration, config_file=CONFIG_FILE)
        model = checkpoint_bytes(self.model)
        state = state_bytes(self.iteration, self.total, self.optimizers, self.schedulers)
        atomic_write_all({self.run_dir / MODEL_FILE: lambda tmp: tmp.write_bytes(model),
                          self.run_dir / STATE_FILE: lambda tmp: tmp.write_bytes(state)})

    def _resume(self) -> None:
        model_path, state_path = self.run_dir / MODEL_FILE, self.run_dir / STATE_FILE
        for path in (state_path, model_path):
            if not path.is_file():
                raise InputError(f"nothing to resume in {self.run_dir} (no {path.name})")
        saved = load_checkpoint(model_path)
        if saved.config != self.model.config:
            raise InputError(f"{model_path} holds another network than its {CONFIG_FILE} "
                             "describes: the run folder is inconsistent; "
                             + fresh_start(self.run_dir, settings=False))
        self.model.load_state_dict(saved.state_dict(), strict=True)
        self.model.provenance = saved.provenance
        self.iteration = self.saved_iteration = restore_state(state_path, self.optimizers,
                                                              self.schedulers)
        # the schedulers keep the run's own drops, even when --iterations moves its end
        self.milestones = sorted(next(iter(self.schedulers.values())).milestones)
        if self.iteration != saved.provenance.get("iterations"):
            raise InputError(f"{model_path} (iteration {saved.provenance.get('iterations')}) "
                             f"and {state_path} (iteration {self.iteration}) disagree, as a "
                             "kill between their two renames leaves them: "
                             + fresh_start(self.run_dir))
        if self.total < self.iteration:
            raise InputError(f"the run in {self.run_dir} is at iteration {self.iteration}, past "
                             f"the {self.total} asked for: give --iterations above it to go on")

    def save_sample(self) -> None:
        """The last batch's first pairs as samples/ITERATION.png (see runstate.write_sample)."""
        if self.rank == 0:
            write_sample(self.run_dir, self.iteration, *self.last)


def _twice(kp):
    """Keypoints for the [fake; real] batch: both halves use the same keypoints."""
    return Keypoints.cat([kp, kp])


def finish(trainer: Trainer) -> None:
    trainer.lock.release()  # another run may start there (the process's end would do it)
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

