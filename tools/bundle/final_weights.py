"""The network weights a training run ended with, as a ``models/*.pt`` state dict.

    python -m tools.bundle.final_weights RUN_DIR DST

``RUN_DIR`` is a run's output folder (``runs/<run_name>``), where ``train.json``'s checkpoint saver
keeps its newest ``checkpoint_epoch=<N>.pt`` files for resuming. The one of the highest epoch must be
the end of the schedule (its trainer state at ``max_epochs``: an interrupted run is refused); its
``model`` entry, the network's state dict, is written atomically to ``DST``, where ``evaluate.json``
(``--model_dir``) or ``CheckpointLoader`` read it like the best-validation ``model.pt``. A study
whose validation set is too small to select checkpoints on reports these weights instead.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from common.handlers import epoch_checkpoints
from tools.bundle.files import write_atomic


def final_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of the highest epoch under ``run_dir``."""
    checkpoints = epoch_checkpoints(str(run_dir))
    if not checkpoints:
        found = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else "no such folder"
        raise ValueError(f"{run_dir}: no checkpoint_epoch=<N>.pt (found: {found}).")
    return Path(checkpoints[0])


def final_weights(run_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """The run's final checkpoint and its ``model`` state dict, refused unless training had ended."""
    path = final_checkpoint(run_dir)
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if "model" not in checkpoint:
        raise ValueError(f"{path}: no 'model' entry (entries: {sorted(checkpoint)}).")
    trainer = checkpoint.get("trainer", {})
    max_epochs = trainer.get("max_epochs")
    # ignite's Engine.state_dict holds the epoch or the iteration, whichever it counts by
    epoch = trainer.get("epoch") or trainer.get("iteration", 0) // (trainer.get("epoch_length") or 1)
    if max_epochs is None or not epoch:
        raise ValueError(f"{path}: no trainer state to tell whether training ended (entries: {sorted(checkpoint)}).")
    if epoch < max_epochs:
        raise ValueError(f"{path}: training stopped at epoch {epoch} of {max_epochs}; resume it before taking its end.")
    return path, checkpoint["model"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="a training run's output folder (runs/<run_name>)")
    parser.add_argument("dst", type=Path, help="the weight file to write (e.g. <model_dir>/model.pt)")
    args = parser.parse_args(argv)
    try:
        path, state = final_weights(args.run_dir)
    except ValueError as e:
        parser.error(str(e))
    buffer = io.BytesIO()
    torch.save(state, buffer)
    args.dst.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.dst, buffer.getvalue())
    print(f"{args.dst}: the weights of {path.name}")


if __name__ == "__main__":
    main()
