"""Session fixtures: phantom data sets and trained copies of the bundles, each made once, on first use."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tests.bundles.profiles import DATA, PROFILES, Profile
from tests.helpers import copy_bundle, run_bundle


@pytest.fixture(scope="session")
def phantoms(tmp_path_factory) -> Callable[[str], Path]:
    """``phantoms(kind)``: the phantom data set ``kind`` (a key of ``profiles.DATA``), made once."""
    made: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in made:
            made[kind] = DATA[kind](tmp_path_factory.mktemp(f"data_{kind}"))
        return made[kind]

    return make


@dataclass(frozen=True)
class Trained:
    """A copy of a bundle whose teachers and KD student were trained for one epoch on phantoms."""

    profile: Profile
    root: Path
    data: Path
    teacher_logs: list[str]  # of each teacher's training (and the transfer bundle's annotation)
    student_log: str


@pytest.fixture(scope="session")
def trained(tmp_path_factory, phantoms) -> Callable[[str], Trained]:
    """``trained(name)``: the bundle ``name`` copied, its teachers and KD student trained; made once."""
    made: dict[str, Trained] = {}

    def make(name: str) -> Trained:
        if name not in made:
            profile = PROFILES[name]
            data = phantoms(profile.data)
            root = copy_bundle(name, tmp_path_factory.mktemp(f"bundle_{name}"))
            teacher_logs = profile.prepare(root, data)
            log = run_bundle(root, ["train.json"], **profile.overrides(data))
            made[name] = Trained(profile, root, data, teacher_logs, log)
        return made[name]

    return make


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker keeps to one thread, so two workers share 2 cores without contention."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
