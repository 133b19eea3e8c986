import pytest
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


def test_term_weight_warmup_ramps_distillation_terms_from_the_engine_epoch():
    from ignite.engine import Engine

    from common.handlers import TermWeightWarmup
    from common.losses import DistillationLoss

    def term(weight: float) -> dict:
        return {"loss": torch.nn.MSELoss(), "inputs": ["student", "label"], "weight": weight}

    loss = DistillationLoss({"seg": term(1.0), "kd": term(0.5), "feature": term(2.0)})
    seen = []
    engine = Engine(lambda engine, batch: seen.append((engine.state.epoch, dict(loss.weights))))
    TermWeightWarmup(loss, epochs=4, keep=["seg"]).attach(engine)
    engine.run([0], max_epochs=5)
    assert [(epoch, w["kd"], w["feature"], w["seg"]) for epoch, w in seen] == [
        (1, 0.125, 0.5, 1.0),
        (2, 0.25, 1.0, 1.0),
        (3, 0.375, 1.5, 1.0),
        (4, 0.5, 2.0, 1.0),
        (5, 0.5, 2.0, 1.0),
    ]
    fresh = DistillationLoss({"seg": term(1.0), "kd": term(0.5)})  # a new process resuming after epoch 2
    seen.clear()
    resumed = Engine(lambda engine, batch: seen.append((engine.state.epoch, fresh.weights["kd"])))
    TermWeightWarmup(fresh, epochs=4, keep=["seg"]).attach(resumed)
    resumed.state.epoch, resumed.state.iteration, resumed.state.max_epochs = 2, 2, 5
    resumed.run([0], max_epochs=5)
    assert seen == [(3, 0.375), (4, 0.5), (5, 0.5)]  # the ramp goes on where it stopped
    with pytest.raises(ValueError, match=r"keep names \['sgm'\], which the loss does not have"):
        TermWeightWarmup(loss, epochs=4, keep=["sgm"])
    with pytest.raises(ValueError, match="epochs must be >= 0"):
        TermWeightWarmup(loss, epochs=-1)
