"""The distillation trainer: MONAI's ``SupervisedTrainer`` with frozen teachers and named loss terms."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
import torch.distributed as dist
from monai.engines import SupervisedTrainer
from monai.utils import CommonKeys as Keys
from torch import nn

from common.diagnostics import label_agreement, term_gradients
from common.keys import IMAGE, LABEL, LABELLED, STUDENT, check_teacher_name, feature_key, tapped_layers
from common.losses import DistillationLoss
from common.taps import FeatureTaps
from common.teachers import freeze


def loss_terms(output: Any) -> dict[str, float]:
    """``output_transform`` for ``StatsHandler``/``TensorBoardStatsHandler``: the total loss, every
    named term (``loss_<name>``) of the iteration and, on diagnostic iterations, each term's gradient
    norm and cosine (``grad_norm_<name>``, ``grad_cos_<name>``), so each is logged under its own name."""
    first = output[0] if isinstance(output, (list, tuple)) else output
    return {k: float(v) for k, v in first.items() if k == Keys.LOSS or k.startswith(("loss_", "grad_"))}


class DistillationTrainer(SupervisedTrainer):
    """``SupervisedTrainer`` that distils one or more frozen teachers into the trained network.

    Per iteration: every teacher runs on its input under ``torch.no_grad`` (eval mode, never
    optimised, never wrapped in DDP); then the parent's iteration runs unchanged (student
    forward, AMP, gradient accumulation, all ignite events), with ``Keys.PRED`` the student
    output so post-processing, metrics and handlers stay standard. The loss is a
    :class:`~common.losses.DistillationLoss`; it receives the tensors named in :mod:`common.keys`:
    ``"student"``, ``"label"``, ``"image"`` (the trained network's input, e.g. the target of a
    reconstruction term), each teacher's logits under its name and the tapped features
    ``"student:<layer>"`` / ``"<teacher>:<layer>"``. The layers to tap are read from the loss
    terms' inputs; the taps record during the training iteration only (never during validation)
    and hold nothing once it ends. Each weighted term is stored in the iteration output as
    ``loss_<name>`` (log it with :func:`loss_terms`). Under ``torch.distributed`` a loss with
    learnable parameters (adapters, projection heads) runs wrapped in ``DistributedDataParallel``,
    so every rank keeps the same adapters as the DDP-wrapped student; checkpoints still hold the
    unwrapped loss.

    Every ``diagnostics_interval`` iterations the trainer also measures, for each term, the norm of
    its gradient on the student and the cosine with the reference term's gradient
    (:func:`common.diagnostics.term_gradients`), stored as ``grad_norm_<name>`` / ``grad_cos_<name>``
    in the iteration output (and logged by :func:`loss_terms`): one more backward pass per term on
    those iterations only.

    Args:
        teachers: a frozen network, or a mapping name -> network for several teachers; an empty
            mapping trains without distillation (a plain ``SupervisedTrainer`` with named terms).
        teacher_input_key: batch key holding the teachers' input (e.g. all modalities while the
            student reads ``"image"``); a mapping name -> key gives each teacher its own input.
        loss_function: the :class:`~common.losses.DistillationLoss`.
        diagnostics_interval: measure the terms' gradients every this many iterations; 0: never.
        reference_term: the term the others' gradients are compared with; default: the first
            term reading ``"label"`` (the segmentation loss).
        other args: as ``monai.engines.SupervisedTrainer``.
    """

    def __init__(
        self,
        device: str | torch.device,
        max_epochs: int,
        train_data_loader,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        loss_function: DistillationLoss,
        teachers: nn.Module | Mapping[str, nn.Module] | None = None,
        teacher_input_key: str | Mapping[str, str] = "image",
        diagnostics_interval: int = 0,
        reference_term: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.teachers = {"teacher": teachers} if isinstance(teachers, nn.Module) else dict(teachers or {})
        for name in self.teachers:
            freeze(self.teachers[check_teacher_name(name)])
        self.teacher_input_keys = (
            {name: teacher_input_key for name in self.teachers}
            if isinstance(teacher_input_key, str)
            else dict(teacher_input_key)
        )
        missing = set(self.teachers) - set(self.teacher_input_keys)
        if missing:
            raise ValueError(f"no teacher_input_key for teachers {sorted(missing)}.")
        self.distillation_loss = loss_function
        if diagnostics_interval < 0:
            raise ValueError(f"diagnostics_interval must be >= 0 (0: off), got {diagnostics_interval}.")
        self.diagnostics_interval = int(diagnostics_interval)
        label_terms = [name for name, specs in loss_function.inputs.items() if LABEL in loss_function.keys_of(specs)]
        self.reference_term = reference_term if reference_term is not None else next(iter(label_terms), None)
        if self.reference_term is not None and self.reference_term not in loss_function.losses:
            terms = sorted(loss_function.losses)
            raise ValueError(f"reference_term {reference_term!r} is not a loss term; terms: {terms}.")
        self._loss_call: nn.Module = loss_function
        if dist.is_available() and dist.is_initialized() and any(p.requires_grad for p in loss_function.parameters()):
            device_ids = [torch.device(device)] if torch.device(device).type == "cuda" else None
            self._loss_call = nn.parallel.DistributedDataParallel(loss_function, device_ids=device_ids)
        student = network.module if isinstance(network, nn.parallel.DistributedDataParallel) else network
        self.student_taps, self.teacher_taps = self._make_taps(student, loss_function.required_inputs)
        self._teacher_outputs: dict[str, torch.Tensor] = {}
        self._batchdata: Mapping[str, Any] = {}
        super().__init__(device, max_epochs, train_data_loader, network, optimizer, self._compute_loss, **kwargs)

    def _make_taps(self, student: nn.Module, required: set[str]) -> tuple[FeatureTaps, dict[str, FeatureTaps]]:
        layers = tapped_layers(required, self.teachers)
        student_taps = FeatureTaps(student, layers[STUDENT])
        teacher_taps = {name: FeatureTaps(net, layers[name]) for name, net in self.teachers.items()}
        return student_taps, teacher_taps

    def _autocast(self) -> contextlib.AbstractContextManager:
        device = torch.device(self.state.device)
        if self.amp and device.type == "cuda":
            return torch.autocast("cuda", **self.amp_kwargs)
        return contextlib.nullcontext()

    def _run_teachers(self, batchdata: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        outputs: dict[str, torch.Tensor] = {}
        with torch.no_grad(), self._autocast():
            for name, teacher in self.teachers.items():
                key = self.teacher_input_keys[name]
                if key not in batchdata:
                    raise KeyError(f"teacher {name!r} reads batch key {key!r}, not in the batch: {sorted(batchdata)}")
                inputs = torch.as_tensor(batchdata[key]).to(self.state.device, non_blocking=self.non_blocking)
                teacher.eval()
                try:
                    outputs[name] = self.inferer(inputs, teacher)
                except RuntimeError as e:
                    raise RuntimeError(
                        f"teacher {name!r} failed on batch key {key!r} of shape {tuple(inputs.shape)}: {e}"
                    ) from e
                outputs.update({feature_key(name, layer): f for layer, f in self.teacher_taps[name].features.items()})
        return outputs

    @contextlib.contextmanager
    def _teachers_run_on(self, batchdata: Mapping[str, Any]) -> Iterator[None]:
        """The taps open and the teachers' outputs on ``batchdata`` held while the block runs."""
        if batchdata is None:
            raise ValueError("Must provide batch data for current iteration.")
        with contextlib.ExitStack() as open_taps:
            for taps in (self.student_taps, *self.teacher_taps.values()):
                open_taps.enter_context(taps)
            self._teacher_outputs = self._run_teachers(batchdata)
            self._batchdata = batchdata
            try:
                yield
            finally:
                self._teacher_outputs, self._batchdata = {}, {}

    def _iteration(self, engine: DistillationTrainer, batchdata: dict[str, torch.Tensor]) -> dict:
        with self._teachers_run_on(batchdata):
            return super()._iteration(engine, batchdata)

    def _loss_inputs(self, pred: torch.Tensor, label: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor a loss term may read, by its key (:mod:`common.keys`), and the current batch's
        ``"labelled"`` mask when it has one."""
        inputs = {STUDENT: pred, LABEL: label, IMAGE: image, **self._teacher_outputs}
        if LABELLED in self._batchdata:
            inputs[LABELLED] = torch.as_tensor(self._batchdata[LABELLED], device=pred.device)
        inputs.update({feature_key(STUDENT, layer): f for layer, f in self.student_taps.features.items()})
        for name in self.teachers:
            output = self._teacher_outputs[name]
            if output.shape[2:] != pred.shape[2:]:
                raise ValueError(
                    f"teacher {name!r} output shape {tuple(output.shape)} and student output shape "
                    f"{tuple(pred.shape)} differ in spatial size: both must see the same crop."
                )
        return inputs

    def measure(self, batchdata: Mapping[str, Any]) -> dict[str, float]:
        """One batch through the teachers, the student and the loss, in the networks' current modes,
        updating nothing: each term's value (``loss_<name>``) with its gradient norm and cosine
        (:func:`~common.diagnostics.term_gradients`), and for the student and each teacher how its
        prediction relates to the label (``<student|teacher>_<measure>``, from
        :func:`~common.diagnostics.label_agreement`)."""
        with self._teachers_run_on(batchdata):
            batch = self.prepare_batch(batchdata, self.state.device, self.non_blocking, **self.to_kwargs)
            image, label = batch[0], batch[1]
            with self._autocast():
                pred = self.inferer(image, self.network)
                _, terms = self.distillation_loss(self._loss_inputs(pred, label, image))
            measured = {f"loss_{name}": float(value.detach()) for name, value in terms.items()}
            measured |= term_gradients(terms, list(self.network.parameters()), self.reference_term)
            labelled = torch.as_tensor(batchdata.get(LABELLED, [1] * len(label))).bool().to(label.device)
            if bool(labelled.any()):  # agreement with the label where the label may be used
                for name, logits in ((STUDENT, pred), *((t, self._teacher_outputs[t]) for t in self.teachers)):
                    agreement = label_agreement(logits[labelled], label[labelled])
                    measured |= {f"{name}_{key}": value for key, value in agreement.items()}
        return measured

    def _compute_loss(self, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        # the network's input as the parent trainer already moved it to the device
        total, terms = self._loss_call(self._loss_inputs(pred, label, self.state.output[Keys.IMAGE]))
        self.state.output.update({f"loss_{name}": value.detach() for name, value in terms.items()})
        if self.diagnostics_interval and self.state.iteration % self.diagnostics_interval == 0:
            self.state.output.update(term_gradients(terms, list(self.network.parameters()), self.reference_term))
        return total
