"""``tools.bundle.final_weights``: the weights a finished run ended with, from its newest checkpoint."""

from __future__ import annotations

import pytest
import torch

from tools.bundle import final_weights


def checkpoint(value: float, iteration: int, max_epochs: int = 10, epoch_length: int = 5) -> dict:
    """What train.json's CheckpointSaver stores, cut to the entries the tool reads (ignite's trainer
    state counts iterations)."""
    model = {"conv.weight": torch.full((2, 1, 3, 3), value), "conv.bias": torch.zeros(2)}
    trainer = {"epoch_length": epoch_length, "iteration": iteration, "max_epochs": max_epochs}
    return {"model": model, "optimizer": {"state": {}}, "trainer": trainer}


def test_the_highest_epoch_s_model_is_written_as_a_state_dict(tmp_path, capsys):
    run = tmp_path / "runs/f0_hlfd_s0"
    run.mkdir(parents=True)
    torch.save(checkpoint(9.0, iteration=45), run / "checkpoint_epoch=9.pt")
    torch.save(checkpoint(10.0, iteration=50), run / "checkpoint_epoch=10.pt")  # "10" sorts before "9" as text
    dst = tmp_path / "runs/brats/f0_hlfd_last_s0/model.pt"
    final_weights.main([str(run), str(dst)])
    assert capsys.readouterr().out.strip() == f"{dst}: the weights of checkpoint_epoch=10.pt"
    state = torch.load(dst, weights_only=True)
    assert set(state) == {"conv.weight", "conv.bias"} and float(state["conv.weight"].max()) == 10.0
    network = torch.nn.Module()
    network.conv = torch.nn.Conv2d(1, 2, 3)
    network.load_state_dict(state)  # loads as a models/*.pt file does
    assert not list(dst.parent.glob(".*.partial"))  # written atomically, nothing left behind


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (checkpoint(1.0, iteration=35), "checkpoint_epoch=7.pt: training stopped at epoch 7 of 10; resume it"),
        (
            {"trainer": {"iteration": 50, "max_epochs": 10}},
            "checkpoint_epoch=7.pt: no 'model' entry (entries: ['trainer'])",
        ),
        ({"model": {}}, "checkpoint_epoch=7.pt: no trainer state to tell whether training ended (entries: ['model'])"),
    ],
    ids=["interrupted", "no model", "no trainer"],
)
def test_a_checkpoint_that_is_not_a_finished_run_is_refused(tmp_path, capsys, stored, message):
    torch.save(stored, tmp_path / "checkpoint_epoch=7.pt")
    dst = tmp_path / "out/model.pt"
    with pytest.raises(SystemExit):
        final_weights.main([str(tmp_path), str(dst)])
    assert message in capsys.readouterr().err
    assert not dst.exists()


def test_a_folder_without_checkpoints_is_named_with_what_it_holds(tmp_path, capsys):
    (tmp_path / "model.pt").touch()
    with pytest.raises(SystemExit):
        final_weights.main([str(tmp_path), str(tmp_path / "out.pt")])
    assert f"{tmp_path}: no checkpoint_epoch=<N>.pt (found: ['model.pt'])" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        final_weights.main([str(tmp_path / "missing"), str(tmp_path / "out.pt")])
    assert "missing: no checkpoint_epoch=<N>.pt (found: no such folder)" in capsys.readouterr().err
