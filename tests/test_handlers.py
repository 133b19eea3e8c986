import torch
from ignite.engine import Engine
from torch import nn

from common.handlers import ResumeFromLatest, epoch_checkpoints


def test_resume_loads_newest_readable_checkpoint(tmp_path):
    for epoch, value in ((2, 2.0), (10, 10.0)):
        torch.save(
            {"model": nn.Linear(1, 1).state_dict() | {"bias": torch.tensor([value])}},
            tmp_path / f"checkpoint_epoch={epoch}.pt",
        )
    (tmp_path / "checkpoint_epoch=11.pt").write_bytes(b"truncated")  # killed while saving
    assert [p.split("=")[-1] for p in epoch_checkpoints(str(tmp_path))] == ["11.pt", "10.pt", "2.pt"]
    model = nn.Linear(1, 1)
    ResumeFromLatest(str(tmp_path), {"model": model})(Engine(lambda e, b: None))
    assert model.bias.item() == 10.0


def test_no_checkpoint_starts_fresh(tmp_path):
    model = nn.Linear(1, 1)
    before = model.bias.item()
    ResumeFromLatest(str(tmp_path), {"model": model})(Engine(lambda e, b: None))
    assert model.bias.item() == before
