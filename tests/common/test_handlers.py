import torch
from ignite.engine import Engine, Events
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


def test_a_finished_run_is_not_resumed_but_a_longer_one_extends_it(tmp_path):
    torch.save(
        {"model": nn.Linear(1, 1).state_dict() | {"bias": torch.tensor([3.0])}}, tmp_path / "checkpoint_epoch=3.pt"
    )
    seen = []
    for max_epochs in (3, 2, 5):  # e.g. MONAI Label training the bundle again, then a longer run
        model = nn.Linear(1, 1)
        engine = Engine(lambda e, b: None)
        engine.add_event_handler(Events.STARTED, ResumeFromLatest(str(tmp_path), {"model": model}))
        engine.add_event_handler(Events.STARTED, lambda e, m=model: seen.append(m.bias.item()))
        engine.run([0], max_epochs=max_epochs)
    assert seen[0] != 3.0 and seen[1] != 3.0
    assert seen[2] == 3.0
