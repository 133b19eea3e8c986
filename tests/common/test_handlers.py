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


def save_bias(path, value: float) -> None:
    torch.save({"model": nn.Linear(1, 1).state_dict() | {"bias": torch.tensor([value])}}, path)


def started_bias(directory, max_epochs: int) -> float:
    """The model's bias when a run of ``max_epochs`` starts in ``directory``."""
    model, seen = nn.Linear(1, 1), []
    engine = Engine(lambda e, b: None)
    engine.add_event_handler(Events.STARTED, ResumeFromLatest(str(directory), {"model": model}))
    engine.add_event_handler(Events.STARTED, lambda e: seen.append(model.bias.item()))
    engine.run([0], max_epochs=max_epochs)
    return seen[0]


def test_a_longer_run_extends_a_finished_one(tmp_path):
    save_bias(tmp_path / "checkpoint_epoch=3.pt", 3.0)
    assert started_bias(tmp_path, 5) == 3.0


def test_a_finished_run_is_set_aside_so_that_the_next_run_resumes_from_its_own_checkpoints(tmp_path):
    save_bias(tmp_path / "checkpoint_epoch=3.pt", 3.0)
    assert started_bias(tmp_path, 3) != 3.0  # e.g. MONAI Label training the bundle again: a new run
    assert (tmp_path / "previous_run_1" / "checkpoint_epoch=3.pt").is_file()
    save_bias(tmp_path / "checkpoint_epoch=1.pt", 1.0)  # the new run's first epoch, then it is killed
    assert started_bias(tmp_path, 3) == 1.0
    save_bias(tmp_path / "checkpoint_epoch=3.pt", 3.5)  # it finishes; a third run sets it aside in turn
    assert started_bias(tmp_path, 3) != 3.5
    assert sorted(p.name for p in (tmp_path / "previous_run_2").iterdir()) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=3.pt",
    ]


def test_resuming_deletes_the_checkpoints_older_than_the_one_it_resumes_from(tmp_path):
    for epoch in (1, 2, 4):  # 1, 2: left by starts killed before the saver of a later start took over
        save_bias(tmp_path / f"checkpoint_epoch={epoch}.pt", float(epoch))
    (tmp_path / "checkpoint_epoch=5.pt").write_bytes(b"truncated")
    assert started_bias(tmp_path, 10) == 4.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=4.pt", "checkpoint_epoch=5.pt"]


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


def scoring_evaluator(scores: list[float]):
    """A MONAI evaluator whose key metric at its n-th run is ``scores[n]``."""
    from ignite.metrics import Metric
    from monai.engines import SupervisedEvaluator

    class Scripted(Metric):
        def reset(self):
            pass

        def update(self, output):
            pass

        def compute(self):
            return scores.pop(0)

    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=[{"image": torch.zeros(1, 1), "label": torch.zeros(1, 1)}],
        network=nn.Identity(),
        key_val_metric={"val_dice": Scripted()},
    )


def test_a_resumed_run_keeps_the_best_validation_metric_of_the_epochs_before_it(tmp_path):
    from common.handlers import BestMetricRecord

    first = scoring_evaluator([0.5, 0.674])
    for epoch in (1, 2):  # the interrupted run: best 0.674 at its validation of epoch 2
        first.run(global_epoch=epoch)
    model = nn.Linear(1, 1)
    torch.save(
        {"model": model.state_dict(), "best_metric": BestMetricRecord(first).state_dict()},
        tmp_path / "checkpoint_epoch=2.pt",
    )
    resumed = scoring_evaluator([0.66])
    resume = ResumeFromLatest(str(tmp_path), {"model": model, "best_metric": BestMetricRecord(resumed)})
    resume(Engine(lambda e, b: None))
    resumed.run(global_epoch=3)  # worse than epoch 2: not a new best
    assert (resumed.state.best_metric, resumed.state.best_metric_epoch) == (0.674, 2)
    torch.save({"model": model.state_dict()}, tmp_path / "checkpoint_epoch=2.pt")  # written before the record
    older = scoring_evaluator([0.66])
    resume = ResumeFromLatest(str(tmp_path), {"model": model, "best_metric": BestMetricRecord(older)})
    resume(Engine(lambda e, b: None))
    older.run(global_epoch=3)
    assert (older.state.best_metric, older.state.best_metric_epoch) == (0.66, 3)
