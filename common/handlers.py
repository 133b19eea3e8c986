"""Ignite handlers the bundles share."""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Mapping, Sequence

import torch
from ignite.engine import Engine, Events
from monai.handlers import CheckpointLoader

logger = logging.getLogger(__name__)


def epoch_checkpoints(directory: str, pattern: str = "*checkpoint_epoch=*.pt") -> list[str]:
    """Training checkpoints in ``directory`` (ignite names them ``..._epoch=N.pt``), newest epoch first."""
    files = glob.glob(os.path.join(glob.escape(directory), pattern))
    return sorted(files, key=checkpoint_epoch, reverse=True)


def checkpoint_epoch(path: str) -> int:
    """The epoch in an ignite checkpoint's file name (``..._epoch=N.pt``), -1 without one."""
    found = re.search(r"epoch=(\d+)", os.path.basename(path))
    return int(found.group(1)) if found else -1


def _writer() -> bool:
    """Whether this process tidies the checkpoint folder: the only one, or rank 0 of several (the
    ranks of a multi-GPU run share the folder, as they share the saver's files)."""
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


class ResumeFromLatest:
    """Resume an interrupted run: when the engine starts, load the newest training checkpoint in
    ``directory`` into ``load_dict`` (student, optimiser, trainer state, adapters, ...) with MONAI's
    ``CheckpointLoader`` (``weights_only=True``); start fresh, saying so, when there is none. A
    checkpoint that cannot be read (a run killed while saving) is skipped for the one before it.
    A newest checkpoint at or past this run's last epoch belongs to a finished run: the run starts
    anew from the configured weights, as when MONAI Label trains a bundle again (resuming would
    train nothing), and the finished run's checkpoints move into ``previous_run_<n>/`` so that the
    new run, if interrupted in turn, resumes from its own. A longer run (more epochs) resumes and
    extends it. After resuming from epoch k, checkpoints of earlier epochs (left by the interrupted
    starts, which the saver no longer tracks) are deleted. In a multi-GPU run only rank 0 moves or
    deletes files.

    Args:
        directory: where the training ``CheckpointSaver`` writes its epoch checkpoints.
        load_dict: the objects to restore, the same mapping the saver's ``save_dict`` holds.
        map_location: passed to ``torch.load``.
        enabled: ``False`` always starts fresh (e.g. fine-tuning).
    """

    def __init__(self, directory: str, load_dict: Mapping, map_location=None, enabled: bool = True) -> None:
        self.directory = directory
        self.load_dict = dict(load_dict)
        self.map_location = map_location
        self.enabled = enabled

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        checkpoints = epoch_checkpoints(self.directory) if self.enabled else []
        for path in checkpoints:
            if engine.state.max_epochs is not None and checkpoint_epoch(path) >= engine.state.max_epochs:
                where = f" (the finished run's checkpoints are in {self._set_aside(checkpoints)})" if _writer() else ""
                logger.info(
                    f"{path} ends a finished run of {engine.state.max_epochs} epoch(s): starting a new run{where}."
                )
                return
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as e:  # truncated or corrupt file: fall back to the previous epoch
                logger.warning(f"skipping unreadable checkpoint {path}: {e}")
                continue
            load_dict = self.load_dict
            # checkpoints written before the best-metric record existed resume without it
            untracked = [k for k, v in load_dict.items() if k not in checkpoint and isinstance(v, BestMetricRecord)]
            if untracked:
                logger.info(f"{path} holds no record of the best validation metric: it restarts from this epoch.")
                load_dict = {k: v for k, v in load_dict.items() if k not in untracked}
            missing = sorted(set(load_dict) - set(checkpoint))
            if missing:
                raise KeyError(f"checkpoint {path} lacks {missing}; it holds {sorted(checkpoint)}.")
            logger.info(f"resuming from {path}")
            CheckpointLoader(load_path=path, load_dict=load_dict, map_location=self.map_location)(engine)
            for older in checkpoints[checkpoints.index(path) + 1 :] if _writer() else []:
                os.remove(older)
            return
        logger.info(f"no checkpoint to resume from in {self.directory}: starting from scratch.")

    def _set_aside(self, checkpoints: Sequence[str]) -> str:
        """Move a finished run's checkpoints into a new ``previous_run_<n>`` folder; its path."""
        number = 1
        while os.path.exists(os.path.join(self.directory, f"previous_run_{number}")):
            number += 1
        folder = os.path.join(self.directory, f"previous_run_{number}")
        os.makedirs(folder)
        for path in checkpoints:
            os.replace(path, os.path.join(folder, os.path.basename(path)))
        return folder


class BestMetricRecord:
    """The best validation metric an evaluator has reached and its epoch, as an object a training
    checkpoint can hold (``state_dict``/``load_state_dict``). MONAI's evaluator keeps them in its
    ``state`` only, so a resumed run would otherwise report the best of its resumed part ("new best
    0.66 at epoch 190") while ``model.pt``, kept by the saver's own restored record, holds a better
    epoch. Put it in the training ``CheckpointSaver``'s ``save_dict`` (and so in
    ``ResumeFromLatest``'s ``load_dict``).

    Args:
        evaluator: the validation engine (``SupervisedEvaluator``) whose best metric is recorded.
    """

    def __init__(self, evaluator: Engine) -> None:
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, float | int]:
        state = self.evaluator.state
        return {"best_metric": float(state.best_metric), "best_metric_epoch": int(state.best_metric_epoch)}

    def load_state_dict(self, state_dict: Mapping[str, float | int]) -> None:
        self.evaluator.state.best_metric = float(state_dict["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state_dict["best_metric_epoch"])


class TermWeightWarmup:
    """Ramp the distillation terms' weights up linearly over the first ``epochs`` epochs: at epoch
    ``e`` (1-based) each term not in ``keep`` weighs ``min(1, e / epochs)`` times its configured
    weight, so a student first learns from the labels before strong feature terms pull on it.
    The factor is computed from the engine's epoch, so a resumed run continues the ramp where it
    stopped. ``epochs`` 0 leaves every weight as configured.

    Args:
        loss: the ``common.losses.DistillationLoss`` whose ``weights`` are ramped.
        epochs: length of the ramp.
        keep: terms left at full weight (the segmentation terms).
    """

    def __init__(self, loss: torch.nn.Module, epochs: int, keep: Sequence[str] = ()) -> None:
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}.")
        unknown = sorted(set(keep) - set(loss.weights))
        if unknown:
            raise ValueError(f"keep names {unknown}, which the loss does not have; its terms: {sorted(loss.weights)}.")
        self.loss, self.epochs = loss, int(epochs)
        self.full = {name: weight for name, weight in loss.weights.items() if name not in set(keep)}

    def attach(self, engine: Engine) -> None:
        if self.epochs and self.full:
            engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        factor = min(1.0, engine.state.epoch / self.epochs)
        for name, weight in self.full.items():
            self.loss.weights[name] = weight * factor
