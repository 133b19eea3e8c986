"""The names a distillation loss reads its tensors by, shared by the trainer (which fills them) and
:class:`~common.losses.DistillationLoss` (which reads them).

Grammar of an input key:

- ``"student"``: the trained network's output (logits);
- ``"label"``: the ground truth of the batch;
- ``"image"``: the trained network's input (e.g. the target of a reconstruction term);
- ``"<teacher>"``: a teacher's output, by the name the trainer gives it (``"teacher"`` for a single one);
- ``"<owner>:<layer>"``: the output of the submodule ``layer`` (a path of ``named_modules()``, such
  as ``"down_layers.3"``) of ``owner``, which is ``"student"`` or a teacher's name.

Beside them, ``"labelled"`` is a (B,) mask of the samples whose label may be used (present when
some training cases are unlabelled, see ``common.data.split_labelled``): every term that reads
``"label"`` then sees the labelled samples only, while the other terms see the whole batch.
"""

from __future__ import annotations

from collections.abc import Iterable

STUDENT = "student"
LABEL = "label"
IMAGE = "image"
LABELLED = "labelled"
BATCH_INPUTS = (STUDENT, LABEL, IMAGE)  # what a term may read besides the teachers and tapped features
RESERVED = (*BATCH_INPUTS, LABELLED)
SEPARATOR = ":"


def feature_key(owner: str, layer: str) -> str:
    """The key of ``owner``'s feature tapped at ``layer``, e.g. ``feature_key("student", "down_4")``."""
    return f"{owner}{SEPARATOR}{layer}"


def parse_key(key: str) -> tuple[str, str | None]:
    """``(owner, layer)`` of ``"<owner>:<layer>"``, ``(key, None)`` of a plain key.

    Raises:
        ValueError: an empty key, or a feature key without its owner or layer.
    """
    owner, separator, layer = key.partition(SEPARATOR)
    if not owner or (separator and not layer):
        raise ValueError(f"loss input {key!r} is malformed: use a name or '<owner>{SEPARATOR}<layer>'.")
    return (owner, layer) if separator else (key, None)


def check_teacher_name(name: str) -> str:
    """``name`` if a teacher may carry it: not a reserved key and without the layer separator."""
    if not name or name in RESERVED or SEPARATOR in name:
        raise ValueError(f"teacher name {name!r} is empty, reserved ({', '.join(RESERVED)}) or contains {SEPARATOR!r}.")
    return name


def tapped_layers(keys: Iterable[str], teachers: Iterable[str]) -> dict[str, list[str]]:
    """The layers to tap per owner (``"student"`` and each teacher) for a loss reading ``keys``.

    Raises:
        ValueError: a key names no known source; the message lists the valid forms.
    """
    teachers = list(teachers)
    layers: dict[str, list[str]] = {STUDENT: [], **{name: [] for name in teachers}}
    for key in sorted(set(keys)):
        owner, layer = parse_key(key)
        if layer is None and (key in BATCH_INPUTS or key in teachers):
            continue
        if layer is None or owner not in layers:
            raise ValueError(
                f"loss input {key!r} names no known source; use {', '.join(map(repr, BATCH_INPUTS))}, one of the "
                f"teachers {teachers}, or '<owner>{SEPARATOR}<layer>' with owner 'student' or a teacher."
            )
        layers[owner].append(layer)
    return layers
