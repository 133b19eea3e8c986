"""Train one nnU-Net v2 configuration with nnU-Net's own trainer on the CPU, on a budget that fits it.

    export nnUNet_raw=... nnUNet_preprocessed=... nnUNet_results=...
    python -m tools.reproduce.nnunet_train 101 3d_fullres all --plans nnUNetPlans_CPU --epochs 50 --iterations 50

``nnUNetv2_train DATASET CONFIGURATION FOLD -device cpu`` trains nnU-Net's schedule, 1000 epochs of
250 iterations (weeks on 2 CPU cores), and picks any other trainer than ``nnUNetTrainer`` (e.g.
``nnUNetTrainer_50epochs``) by a lookup that imports ``timm``, which the CPU install leaves out
(``requirements-nnunet.txt``). This runs what that command runs, with nnU-Net's own functions
(``get_trainer_from_args``, ``maybe_load_checkpoint``, ``run_training``), and only sets the
trainer's ``num_epochs``, ``num_iterations_per_epoch`` and ``num_val_iterations_per_epoch`` to the
budget given before it starts (and ``save_every``, so that a stopped run loses few epochs); the
learning-rate schedule follows ``num_epochs``. The results
folder is nnU-Net's (``nnUNet_results/<dataset>/nnUNetTrainer__<plans>__<configuration>/fold_<f>``,
``checkpoint_final.pth``); its ``debug.json`` records the budget. Started again, an interrupted run
continues from its newest checkpoint (as ``nnUNetv2_train --c``) and a finished one is left alone.
nnU-Net's validation (``perform_actual_validation``) follows unless ``--no_validation``; with fold
``all`` the validation cases are the training cases, so it is skipped.
"""

from __future__ import annotations

import argparse
import os


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="dataset id or name, as for nnUNetv2_train")
    parser.add_argument("configuration", help="e.g. 3d_fullres")
    parser.add_argument("fold", help="0-4, or all")
    parser.add_argument("--plans", default="nnUNetPlans", help="plans identifier (-p)")
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--iterations", type=int, required=True, help="training iterations per epoch")
    parser.add_argument("--val_iterations", type=int, default=10, help="validation iterations per epoch")
    parser.add_argument("--save_every", type=int, default=5, help="epochs between checkpoints (nnU-Net: 50)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    parser.add_argument("--no_validation", action="store_true", help="skip nnU-Net's validation of the fold")
    args = parser.parse_args(argv)
    for name, value in (
        ("--epochs", args.epochs),
        ("--iterations", args.iterations),
        ("--save_every", args.save_every),
    ):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    for variable in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        if not os.environ.get(variable):
            parser.error(f"set {variable} (nnU-Net's folders), as for nnUNetv2_train")

    import torch
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    torch.set_num_threads(args.threads)
    fold = args.fold if args.fold == "all" else int(args.fold)
    trainer = get_trainer_from_args(
        args.dataset, args.configuration, fold, "nnUNetTrainer", args.plans, True, torch.device("cpu")
    )
    trainer.num_epochs = args.epochs
    trainer.num_iterations_per_epoch = args.iterations
    trainer.num_val_iterations_per_epoch = args.val_iterations
    trainer.save_every = args.save_every  # a run stopped on a CPU loses at most these epochs
    final = os.path.join(trainer.output_folder, "checkpoint_final.pth")
    if os.path.isfile(final):
        print(f"{final} exists: the training is finished")
        return
    maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)
    trainer.run_training()
    if not args.no_validation and fold != "all":
        trainer.perform_actual_validation()
    print(f"trained: {final}")


if __name__ == "__main__":
    main()
