"""Several seeds of one recipe (`mnist-arch train --seed 0-4`, `init --min-accuracy auto`) run side by side
where the cores allow, each at the threads it takes alone, so each seed's run is the one it makes alone
(`jobs.train_runs`, `remote.seed_threads`)."""

from __future__ import annotations

import dataclasses
import os

from mnist_arch.jobs import train_runs
from mnist_arch.project import TRAIN_DEFAULTS, Project, adhoc
from mnist_arch.runs import available_cores
from mnist_arch.spec import parse_recipe_fields
from mnist_arch.work import TrainRequest


def _small(user_models):
    recipe = parse_recipe_fields({"min_accuracy": 0.1, "epochs": 1, "train_subset": 256}, "test", TRAIN_DEFAULTS)
    model = adhoc("small_net.py:Net", user_models)
    return Project(path=None, root=user_models, declared=()), dataclasses.replace(
        model, spec=dataclasses.replace(model.spec, recipes={"quick": recipe}))


def _run(result) -> list:
    return [(e.train_loss, e.test_loss, e.test_accuracy) for e in result.history]


def test_seeds_run_side_by_side_and_each_repeats_its_run_alone(user_models, mnist_root, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # two cores, all ours
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    project, model = _small(user_models)
    notes, ended = [], []
    both = train_runs(project, TrainRequest(model, "quick", data_dir=str(mnist_root), device="cpu"), [0, 1],
                      on_note=notes.append, on_result=lambda seed, r: ended.append(seed))
    assert any("seeds 0, 1 side by side, 2 at once with 1 thread(s) each" in n for n in notes), notes
    assert any(n.startswith("seed 1: small_net.py:Net epoch   1") for n in notes), notes
    assert [r.seed for r in both] == [0, 1] and sorted(ended) == [0, 1]
    assert [r.threads for r in both] == [1, 1]
    alone = train_runs(project, TrainRequest(model, "quick", data_dir=str(mnist_root), device="cpu", threads=1), [1])
    assert _run(both[1]) == _run(alone[0])  # the seed's run, exactly, beside another or alone
    assert _run(both[0]) != _run(both[1])


def test_one_core_keeps_seeds_one_after_another(user_models, mnist_root, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0}, raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "1")
    assert available_cores() == 1
    project, model = _small(user_models)
    notes = []
    results = train_runs(project, TrainRequest(model, "quick", data_dir=str(mnist_root), device="cpu"), [0, 1],
                         on_note=notes.append)
    assert [r.seed for r in results] == [0, 1] and not any("at once" in n for n in notes)
    assert not any(n.startswith("seed ") for n in notes)
