"""`mnist-arch tune` (mnist_arch.tune): a study of rule-tier runs in isolated workers, its storage shared by
processes and machines, its pruning, its result. A linear model on 512 training images (a trial takes a few
seconds, most of it the 10,000-image evaluation), against a rule it can meet: 60% within 3 epochs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna", reason="the tune extra (pip install \"mnist-arch[tune]\") is not installed")

from mnist_arch import remote, tune, tune_report, tune_space, tune_storage, tune_trial, tune_write  # noqa: E402
from mnist_arch.cli import main  # noqa: E402
from mnist_arch.errors import MnistArchError  # noqa: E402
from mnist_arch.project import tomllib  # noqa: E402
from mnist_arch.runs import Epoch  # noqa: E402

ROOT = Path(tune.__file__).resolve().parents[1]  # the package under test, for the subprocesses

LINEAR = """import time

import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        time.sleep(SLEEP)
        return self.fc(x.flatten(1))
"""

# Its output is one learned bias per class, whatever the image: every prediction is the same class.
CONSTANT = """import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(10))

    def forward(self, x):
        return self.bias.expand(len(x), 10) + 0 * x.flatten(1)[:, :10]
"""

# Finite weights, and a loss that is not a number from the first step on.
NAN = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)) * float("nan")
"""

# Its build raises for seed 1 while the file break-seed-1 is there (torch.manual_seed(seed) comes before the build).
SEED_BREAKS = """import os

import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        if torch.initial_seed() == 1 and os.path.exists("break-seed-1"):
            raise RuntimeError("seed 1 breaks while break-seed-1 is there")
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""

PYPROJECT = """# a user's project: every byte of it outside the rule table stays as it is
[project]
name = "course-repo"

[tool.mnist-arch.models.net]
model = "net.py:Net"
max_params = 10000

[tool.mnist-arch.models.net.rule]
threshold = 0.6   # the course's rule, in small
epochs = 3
consecutive = 1
train_subset = 512
lr = 0.5          # a recipe the search replaces

[tool.mnist-arch.models.net.tune]
optimizer = "adam"
lr = [0.003, 0.01]
schedule = "none"
batch_size = 64
rotation = 0
translate = 0

[tool.other]
keep = "me"
"""


def repo(tmp_path: Path, model: str = LINEAR, sleep: float = 0.0, pyproject: str = PYPROJECT) -> Path:
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / "net.py").write_text(model.replace("SLEEP", repr(sleep)), encoding="utf-8")
    (folder / "pyproject.toml").write_text(pyproject, encoding="utf-8")
    return folder


def command(folder: Path, mnist_root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "mnist_arch.cli", "tune", "net", "--data-dir", str(mnist_root), "--device", "cpu",
            *args]


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def run(folder: Path, mnist_root: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command(folder, mnist_root, *args), cwd=folder, env=environment(), capture_output=True,
                          text=True, timeout=timeout)


def _sigint_as_usual() -> None:
    """In the child before exec: SIGINT back to its default. A suite started in the background of a
    non-interactive shell has SIGINT ignored, every child inherits that, and the command rightly keeps it
    ignored (as Python does): the stop-signal tests would then test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(folder: Path, mnist_root: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(command(folder, mnist_root, *args), cwd=folder, env=environment(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_sigint_as_usual)


def trials(storage, study: str = "net") -> list:
    storage = optuna.storages.journal.JournalStorage(optuna.storages.journal.JournalFileBackend(str(storage))) \
        if isinstance(storage, Path) else storage
    return sorted(optuna.load_study(study_name=study, storage=storage).get_trials(), key=lambda t: t.number)


def states(rows) -> list[str]:
    return [t.state.name for t in rows]


def finished(rows) -> list:
    return [t for t in rows if t.state.name in ("COMPLETE", "PRUNED")]


def wait_for(predicate, journal: Path, proc: subprocess.Popen, limit: float = 180):
    """The first trial the predicate accepts, polled from the journal while `proc` runs."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if journal.exists():
            try:
                hit = next((t for t in trials(journal) if predicate(t)), None)
            except KeyError:  # the study is not created yet
                hit = None
            if hit is not None:
                return hit
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    raise AssertionError("no trial as awaited in time")


# ---------------------------------------------------------------------------------------------
# Studies


def test_a_study_meets_the_rule_writes_its_table_and_the_table_trains_as_the_rule_tier(tmp_path, mnist_root):
    folder = repo(tmp_path)
    before = (folder / "pyproject.toml").read_text(encoding="utf-8")
    done = run(folder, mnist_root, "--trials", "2", "--seeds", "0-1", "--write")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("MET: trial "), done.stdout
    assert "seeds 0, 1 again: " in done.stdout and " of 2 met the rule" in done.stdout
    # The embedded storage, out of git: a folder that ignores itself.
    assert (folder / ".mnist-arch" / ".gitignore").read_text().splitlines()[-1] == "*"
    assert (folder / ".mnist-arch" / "tune.journal").is_file()
    # Progress: trial, epoch, best so far, time left.
    assert "tune net: trial 0 epoch 1/3 test accuracy " in done.stderr and " left" in done.stderr
    # The printed table is the written one, and every other byte stays.
    printed = done.stdout.split("pyproject.toml:\n\n", 1)[1].strip()
    after = (folder / "pyproject.toml").read_text(encoding="utf-8")
    rule = tomllib.loads(after)["tool"]["mnist-arch"]["models"]["net"]["rule"]
    assert tomllib.loads(printed)["tool"]["mnist-arch"]["models"]["net"]["rule"] == rule
    assert rule["optimizer"] == "adam" and 0.003 <= rule["lr"] <= 0.01 and rule["batch_size"] == 64
    assert rule["threshold"] == 0.6 and rule["train_subset"] == 512
    old, new = before.splitlines(keepends=True), after.splitlines(keepends=True)
    at = old.index("lr = 0.5          # a recipe the search replaces\n")
    added = len(new) - len(old) + 1
    assert new[:at] == old[:at] and new[at + added:] == old[at + 1:], after
    assert all(line.split(" = ")[0] in tune_space.SEARCHED for line in new[at:at + added])
    # The written table is the rule tier's recipe.
    trained = subprocess.run([sys.executable, "-m", "mnist_arch.cli", "train", "net", "--tier", "rule", "--device",
                              "cpu", "--data-dir", str(mnist_root)], cwd=folder, env=environment(),
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert trained.stdout.splitlines()[-1].startswith("PASS: net (rule, seed 0)")
    # Again: the study has its trials and the seeds' verdicts, so nothing trains; the same answer.
    again = run(folder, mnist_root, "--trials", "2", "--seeds", "0-1", "--format", "json")
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["passed"] and len(report["trials"]) == 2 and len(report["seeds"]) == 2
    assert "epoch 1/3" not in again.stderr and "again with seed" not in again.stderr


def test_a_seed_that_could_not_run_is_no_verdict_and_the_same_command_runs_it_again(tmp_path, mnist_root):
    folder = repo(tmp_path, SEED_BREAKS)
    (folder / "break-seed-1").write_text("", encoding="utf-8")
    first = run(folder, mnist_root, "--trials", "1", "--seeds", "0-1")
    assert first.returncode == 0, first.stderr
    assert "seed 1 could not run (it is run again by the same command): Building " in first.stderr, first.stderr
    assert "raised RuntimeError: seed 1 breaks while break-seed-1 is there" in first.stderr, first.stderr
    assert "seeds 0, 1 again: 1 of 1 met the rule (1 could not run: 1; the same command runs them again)" \
        in first.stdout, first.stdout
    (folder / "break-seed-1").unlink()
    again = run(folder, mnist_root, "--trials", "1", "--seeds", "0-1")
    assert again.returncode == 0, again.stderr
    assert "again with seed(s) 1 (" in again.stderr, again.stderr  # seed 0's verdict is kept; only seed 1 runs
    assert "seeds 0, 1 again: 2 of 2 met the rule." in again.stdout, again.stdout


def test_two_processes_share_one_journal_and_finish_its_trials_once(tmp_path, mnist_root):
    folder = repo(tmp_path, sleep=0.05)  # a second or so a trial: both processes are up before the six are done
    procs = [start(folder, mnist_root, "--trials", "6", "--no-seeds") for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = trials(folder / ".mnist-arch" / "tune.journal")
    assert [t.number for t in rows] == list(range(len(rows)))  # each number once
    assert len(finished(rows)) == 6 and "RUNNING" not in states(rows), states(rows)
    owners = {t.user_attrs["owner"]["pid"] for t in finished(rows)}
    assert owners == {p.pid for p in procs}, "both processes ran trials of the one study"


def test_an_sqlite_url_works(tmp_path, mnist_root):
    folder = repo(tmp_path)
    url = f"sqlite:///{tmp_path / 'tune.db'}"
    done = run(folder, mnist_root, "--trials", "2", "--no-seeds", "--storage", url, "--study", "mine",
               "--format", "markdown")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("| trial | state |") and "**MET**" in done.stdout
    rows = trials(optuna.storages.RDBStorage(url), "mine")
    assert len(finished(rows)) == 2 and not (folder / ".mnist-arch").exists()


def test_a_study_resumes_after_its_process_is_killed(tmp_path, mnist_root):
    """kill -9 of the command (a cancelled CI job) mid-trial: the next run fails that trial (its owner is
    dead), keeps the finished one and finishes the study."""
    folder = repo(tmp_path, sleep=0.02)
    journal = folder / ".mnist-arch" / "tune.journal"
    proc = start(folder, mnist_root, "--trials", "3", "--no-seeds")
    first = wait_for(lambda t: t.state.name == "COMPLETE", journal, proc)
    wait_for(lambda t: t.state.name == "RUNNING" and "worker_pid" in t.user_attrs, journal, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    rows = trials(journal)
    running = [t.number for t in rows if t.state.name == "RUNNING"]
    assert running, states(rows)
    done = run(folder, mnist_root, "--trials", "3", "--no-seeds")
    assert done.returncode == 0, done.stderr
    assert f"trial(s) {', '.join(map(str, running))} failed: their process ended" in done.stderr
    rows = trials(journal)
    assert rows[first.number].state.name == "COMPLETE" and rows[first.number].value == first.value
    assert all(rows[n].state.name == "FAIL" and "ended before the trial did" in rows[n].user_attrs["reason"]
               for n in running)
    assert len(finished(rows)) == 3 and "RUNNING" not in states(rows)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_fails_the_running_trial_and_the_same_command_continues(tmp_path, mnist_root, sig):
    folder = repo(tmp_path, sleep=0.02)
    journal = folder / ".mnist-arch" / "tune.journal"
    proc = start(folder, mnist_root, "--trials", "2", "--no-seeds")
    victim = wait_for(lambda t: t.state.name == "RUNNING" and "worker_pid" in t.user_attrs, journal, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err  # as every command stopped by a signal (docs/stopping.md)
    assert "mnist-arch tune: the finished trials are kept in" in err and "Traceback" not in err, err
    assert f"mnist-arch: stopped by {sig.name}" in err, err
    rows = trials(journal)
    assert rows[victim.number].state.name == "FAIL" and "interrupted" in rows[victim.number].user_attrs["reason"]
    assert "RUNNING" not in states(rows) and len(rows) == 1, states(rows)  # no trial started while it stopped
    done = run(folder, mnist_root, "--trials", "2", "--no-seeds")
    assert done.returncode == 0, done.stderr
    assert len(finished(trials(journal))) == 2


def test_a_worker_killed_mid_trial_fails_that_trial_and_the_study_goes_on(tmp_path, mnist_root):
    folder = repo(tmp_path, sleep=0.02)
    journal = folder / ".mnist-arch" / "tune.journal"
    proc = start(folder, mnist_root, "--trials", "3", "--no-seeds")
    victim = wait_for(lambda t: t.state.name == "RUNNING" and "worker_pid" in t.user_attrs, journal, proc)
    os.kill(victim.user_attrs["worker_pid"], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    rows = trials(journal)
    assert rows[victim.number].state.name == "FAIL"
    assert "killed by SIGKILL" in rows[victim.number].user_attrs["reason"]
    assert len(finished(rows)) == 3 and "RUNNING" not in states(rows), states(rows)


def test_a_collapsed_study_is_pruned_with_its_reason_and_said_near_chance(tmp_path, mnist_root):
    folder = repo(tmp_path, CONSTANT)
    done = run(folder, mnist_root, "--trials", "2", "--format", "json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["near_chance"] and not report["passed"] and report["best_accuracy"] < 0.2
    assert [r["state"] for r in report["trials"]] == ["PRUNED", "PRUNED"]
    assert all(r["reason"].startswith("collapsed in epoch 1: 100.0% of the test predictions are class")
               and r["epochs"] == 1 for r in report["trials"])
    text = run(folder, mnist_root, "--trials", "2")
    assert text.returncode == 1 and text.stdout.startswith("NEAR CHANCE: net: the best of 2 finished trials reached")
    assert "pyproject.toml" not in text.stdout  # no table to paste


def test_a_trial_whose_loss_is_not_a_number_is_pruned_at_once_with_its_reason(tmp_path, mnist_root):
    folder = repo(tmp_path, NAN)
    done = run(folder, mnist_root, "--trials", "1", "--format", "json")
    assert done.returncode == 1, done.stderr
    (row,) = json.loads(done.stdout)["trials"]
    assert row["state"] == "PRUNED" and row["epochs"] == 1, row
    assert row["reason"].startswith("the loss is not a number in epoch 1 (train loss nan"), row


# A model no recipe can train: its build raises, or its first training step does (in eval mode, it runs).
BUILD_RAISES = LINEAR.replace("super().__init__()", "super().__init__()\n"
                                                    "        raise ValueError('no such layer: fc2')")
STEP_RAISES = LINEAR.replace("        time.sleep(SLEEP)\n", "        if self.training:\n"
                                                            "            raise RuntimeError('a layer of mine broke')\n")


@pytest.mark.parametrize("broken, words", [(BUILD_RAISES, "ValueError: no such layer: fc2"),
                                           (STEP_RAISES, "RuntimeError: a layer of mine broke")])
def test_a_model_no_recipe_can_train_stops_the_study_at_its_first_trial(tmp_path, mnist_root, broken, words):
    """Its error, exit 2, after one trial rather than three; the study, whose trials all failed, goes on with
    the model once it is fixed (its code changed, but no trial had ended for it to be compared with)."""
    declared = PYPROJECT.replace("consecutive = 1\n", 'consecutive = 1\nloss = "cross_entropy"\n')  # no check first
    folder = repo(tmp_path, broken, pyproject=declared)
    done = run(folder, mnist_root, "--trials", "3", "--no-seeds")
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "No recipe can change that, so the search stopped at trial 0" in done.stderr
    assert "Traceback" not in done.stderr
    rows = trials(folder / ".mnist-arch" / "tune.journal")
    assert states(rows) == ["FAIL"] and words in rows[0].user_attrs["reason"]
    (folder / "net.py").write_text(LINEAR.replace("SLEEP", "0.0"), encoding="utf-8")
    fixed = run(folder, mnist_root, "--trials", "1", "--no-seeds")
    assert fixed.returncode == 0, fixed.stderr
    assert states(trials(folder / ".mnist-arch" / "tune.journal")) == ["FAIL", "COMPLETE"]


def test_only_a_recipe_or_memory_error_is_one_another_recipe_may_fix():
    from mnist_arch.train import RecipeError

    assert remote.recipe_may_fix(RecipeError("mnist-arch's own set-up failed: the recipe's optimizer ..."))
    assert remote.recipe_may_fix(MemoryError())
    assert remote.recipe_may_fix(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert remote.recipe_may_fix(RuntimeError("[enforce fail at alloc_cpu.cpp] DefaultCPUAllocator: can't "
                                                  "allocate memory: you tried to allocate 123 bytes"))
    for error in (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), ValueError("no such layer"),
                  SystemExit(3), MnistArchError("Building net.py:Net() raised ValueError: no such layer."),
                  MnistArchError("mnist-arch's own set-up failed, not the model's code: loading MNIST ...")):
        assert not remote.recipe_may_fix(error), error


def test_a_resumed_study_refuses_another_model_or_other_fixed_fields_and_takes_a_comment(tmp_path, mnist_root):
    """Its trials measured one network trained one way: another version of the model's code, or another field
    of the rule table outside the search (here train_subset), would rank new trials against them."""
    folder = repo(tmp_path)
    assert run(folder, mnist_root, "--trials", "1", "--no-seeds").returncode == 0
    model = (folder / "net.py").read_text(encoding="utf-8")
    (folder / "net.py").write_text("# a comment, and another line end, change no code\r\n" + model, encoding="utf-8")
    same = run(folder, mnist_root, "--trials", "1", "--no-seeds")
    assert same.returncode == 0 and "epoch 1/3" not in same.stderr, same.stderr  # the study had its trial
    (folder / "net.py").write_text(model.replace("nn.Linear(784, 10)", "nn.Linear(784, 10, bias=False)"),
                                   encoding="utf-8")
    other = run(folder, mnist_root, "--trials", "2", "--no-seeds")
    assert other.returncode == 2 and "Traceback" not in other.stderr, other.stderr
    assert "The study 'net' in " in other.stderr and "trained another version of Net" in other.stderr
    assert "--study NAME" in other.stderr and "epoch 1/3" not in other.stderr
    (folder / "net.py").write_text(model, encoding="utf-8")
    (folder / "pyproject.toml").write_text(PYPROJECT.replace("train_subset = 512", "train_subset = 256"),
                                           encoding="utf-8")
    subset = run(folder, mnist_root, "--trials", "2", "--no-seeds")
    assert subset.returncode == 2, subset.stderr
    assert "other fields of the rule table outside the search" in subset.stderr and "256" in subset.stderr
    assert len(trials(folder / ".mnist-arch" / "tune.journal")) == 1


# ---------------------------------------------------------------------------------------------
# Errors: one paragraph, exit 2


def test_without_optuna_tune_names_the_extra(tmp_path, monkeypatch, capsys):
    folder = repo(tmp_path)
    monkeypatch.chdir(folder)
    monkeypatch.setitem(sys.modules, "optuna", None)  # `import optuna` raises ImportError
    assert main(["tune", "net"]) == 2
    err = capsys.readouterr().err
    assert 'pip install "mnist-arch[tune]"' in err and "Traceback" not in err


def test_the_tune_extra_brings_optuna_and_the_postgresql_driver_and_ci_gets_them():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    for extra in ("tune", "dev"):  # CI installs .[dev]
        names = {re.split(r"[\[<>=;]", r)[0] for r in extras[extra]}
        assert {"optuna", "psycopg"} <= names, (extra, extras[extra])


def test_a_model_without_a_rule_is_told_the_rules_fields(tmp_path, monkeypatch, capsys):
    folder = repo(tmp_path, pyproject=PYPROJECT.split("[tool.mnist-arch.models.net.rule]")[0])
    monkeypatch.chdir(folder)
    assert main(["tune", "net"]) == 2
    err = capsys.readouterr().err
    assert "declares no rule to tune for" in err
    assert all(f in err for f in ("threshold", "epochs", "consecutive", "[tool.mnist-arch.models.net.rule]"))
    assert main(["tune", "--model", "net.py:Net", "--write", "--threshold", "0.9", "--epochs", "2"]) == 2
    assert "--write puts the recipe into the model's table" in capsys.readouterr().err


def test_a_tune_table_is_checked(tmp_path):
    where = "pyproject.toml [tool.mnist-arch.models.net.tune]"
    assert tune_space.parse_space({"lr": [0.01, 0.1], "optimizer": "sgd"}, where)["optimizer"] == ["sgd"]
    assert tune_space.parse_space({"lr": {"sgd": [0.05, 0.1]}}, where)["lr"]["sgd"] == [0.05, 0.1]
    for table, words in [({"lr": [0.1, 0.01]}, "'lr' must be one value or a range [low, high]"),
                         ({"lr": [0, 0.1]}, "numbers above 0 (sampled on a log scale)"),
                         ({"optimizer": ["sgd", "rmsprop"]}, "'optimizer' must be one value or a list of choices"),
                         ({"batch_size": [64, 0]}, "whole numbers of at least 1"),
                         ({"step_size": [1.5, 3]}, "'step_size'"),
                         ({"lr": {"lion": [0.1, 0.2]}}, "'lr' as a table names optimizers"),
                         ({"momentun": [0.8, 0.9]}, "momentun")]:
        with pytest.raises(MnistArchError) as error:
            tune_space.parse_space(table, where)
        assert where in str(error.value) and words in str(error.value), str(error.value)


def test_a_storage_that_cannot_open_is_an_error_of_ours(tmp_path):
    with pytest.raises(MnistArchError, match=r"neither a database URL .* nor a \.journal file"):
        tune_storage.open_storage(optuna, "tune.db", tmp_path)
    with pytest.raises(MnistArchError, match=r"--storage postgresql://me:\*\*\*@127\.0\.0\.1:1/x cannot be opened"):
        tune_storage.open_storage(optuna, "postgresql://me:secret@127.0.0.1:1/x", tmp_path)


def test_a_journal_under_the_home_folder(tmp_path, monkeypatch):
    """`--storage journal:~/x.journal`: the shell leaves a ~ after "journal:" as it is, so the path is expanded here
    (not a folder named ~ in the project)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    _, claim, words = tune_storage.open_storage(optuna, "journal:~/studies/x.journal", tmp_path / "project")
    assert words == str(tmp_path / "home" / "studies" / "x.journal") and claim.parent == tmp_path / "home" / "studies"
    assert not (tmp_path / "project").exists()


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used", "ignore::FutureWarning",
                            "ignore::optuna.exceptions.ExperimentalWarning")
def test_a_trial_on_relational_storage_beats_while_it_runs(tmp_path):
    """Optuna's heartbeat is the caller's to record under ask and tell: a trial beats while it runs, so that
    another machine fails it once it stops beating (a trial that never beat is never failed by it)."""
    storage, _, _ = tune_storage.open_storage(optuna, f"sqlite:///{tmp_path / 'beat.db'}", tmp_path)
    study = optuna.create_study(storage=storage, study_name="s")
    beating, silent = study.ask(), study.ask()
    with tune_storage.heartbeat(optuna, storage, beating._trial_id, interval=0.01):
        time.sleep(0.1)
    storage.grace_period = -1  # any heartbeat is an old one now
    stale = storage._get_stale_trial_ids(study._study_id)
    assert beating._trial_id in stale and silent._trial_id not in stale
    optuna.storages.fail_stale_trials(study)
    assert [t.state.name for t in study.trials] == ["FAIL", "RUNNING"]


# ---------------------------------------------------------------------------------------------
# The objective, the pruning reasons, the owners


def epochs(*accuracies: float) -> list[Epoch]:
    return [Epoch(i, 0.1, a, 0.1, a, 0.01, 1.0) for i, a in enumerate(accuracies, 1)]


def test_the_objective_is_fewest_epochs_then_accuracy():
    fast = tune_trial.score(epochs(0.990, 0.995, 0.996), 0.994, 15, 2)
    faster_but_lower = tune_trial.score(epochs(0.995, 0.9941), 0.994, 15, 2)
    slow = tune_trial.score(epochs(0.99, 0.99, 0.995, 0.999), 0.994, 15, 2)
    near = tune_trial.score(epochs(0.99, 0.993, 0.993, 0.99), 0.994, 4, 2)
    far = tune_trial.score(epochs(0.9, 0.95, 0.96, 0.9), 0.994, 4, 2)
    assert faster_but_lower.passed and faster_but_lower.epoch == 2 and faster_but_lower.value < fast.value
    assert fast.passed and fast.value < slow.value and slow.epoch == 4
    assert not near.passed and near.held == 0.993 and fast.value < slow.value < near.value < far.value
    same_epoch = tune_trial.score(epochs(0.99, 0.996, 0.997), 0.994, 15, 2)
    assert same_epoch.value < fast.value  # same epoch, higher accuracy held


def test_nan_and_collapse_are_pruned_at_once_with_their_reason():
    assert tune_trial.prune_reason(Epoch(2, float("nan"), 0.1, 0.3, 0.5, 0.1, 1.0)).startswith(
        "the loss is not a number in epoch 2")
    collapsed = Epoch(1, 0.1, 0.1, 0.3, 0.1135, 0.1, 1.0, {"class": 1, "share": 0.93})
    assert tune_trial.prune_reason(collapsed) == ("collapsed in epoch 1: 93.0% of the test predictions are class 1 (an "
                                            "MNIST class is about 10%)")
    assert tune_trial.prune_reason(epochs(0.98)[0]) is None


def test_a_trial_owner_is_dead_only_when_its_pid_is_gone_or_reused_on_this_host():
    me = tune_storage.owner()
    assert not tune_storage.owner_dead(me)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tune_storage.owner_dead({**me, "pid": gone.pid, "started": "1"})
    assert tune_storage.owner_dead({**me, "started": "0"})  # the pid is alive, but another process now
    assert not tune_storage.owner_dead({**me, "host": "another-machine", "pid": gone.pid})  # its heartbeat's to judge


def test_a_changed_choice_list_is_another_parameter_of_the_same_study():
    study = optuna.create_study()
    for batch in ([64, 128, 256], [64, 128], [64, 128, 256]):
        trial = study.ask()
        fields = tune_space.suggest(trial, {**tune_space.DEFAULT_SPACE, "batch_size": batch}, 15)
        assert fields["batch_size"] in batch
        study.tell(trial, 1.0)
    names = [set(t.params) for t in study.trials]
    assert "batch_size" in names[0] and "batch_size in 64/128" in names[1] and "batch_size" in names[2]


def test_the_suggested_recipe_is_a_valid_rule_table():
    study = optuna.create_study()
    for _ in range(30):
        trial = study.ask()
        fields = tune_space.suggest(trial, tune_space.DEFAULT_SPACE, 15)
        table = {"threshold": 0.994, "epochs": 15, "consecutive": 3, **fields}
        from mnist_arch.project import TRAIN_DEFAULTS
        from mnist_arch.spec import parse_rule_fields

        recipe = parse_rule_fields(table, "t", TRAIN_DEFAULTS)
        assert recipe.optimizer in ("sgd", "adam") and recipe.batch_size in (64, 128, 256)
        rendered = tomllib.loads(tune_report.render_table("net", table))
        assert rendered["tool"]["mnist-arch"]["models"]["net"]["rule"] == table
        study.tell(trial, 1.0)


# ---------------------------------------------------------------------------------------------
# --write


def test_write_replaces_the_searched_fields_in_place_and_keeps_every_other_byte(tmp_path):
    path = tmp_path / "pyproject.toml"
    text = ("[tool.mnist-arch.models.net]\r\nmodel = \"net.py:Net\"\r\n\r\n"
            "[tool.mnist-arch.models.net.rule]  # the course's\r\nthreshold = 0.994\r\nepochs = 15\r\n"
            "optimizer_kwargs = {momentum = 0.9}\r\nscale = [\r\n  0.9,  # lr = 1\r\n  1.1,\r\n]\r\n"
            "schedule_kwargs = {step_size = 6}\r\n"
            "\r\n[tool.x]\r\ny = [\r\n  1,\r\n]\r\n")
    path.write_bytes(text.encode())
    fields = {"threshold": 0.994, "epochs": 15, "optimizer": "sgd", "lr": 0.05,
              "optimizer_kwargs": {"momentum": 0.9, "nesterov": True}}
    tune_write.write_rule(path, "net", fields)
    new = path.read_bytes().decode()
    written = 'optimizer = "sgd"\r\nlr = 0.05\r\noptimizer_kwargs = {momentum = 0.9, nesterov = true}\r\n'
    expected = text.replace("optimizer_kwargs = {momentum = 0.9}\r\n", written)
    assert new == expected.replace("schedule_kwargs = {step_size = 6}\r\n", "")


def test_write_appends_a_table_where_there_is_none_and_refuses_what_it_cannot_edit(tmp_path):
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.mnist-arch.models.net]\nmodel = "net.py:Net"', encoding="utf-8")
    tune_write.write_rule(path, "net", {"threshold": 0.9, "epochs": 2, "lr": 0.01})
    assert path.read_text() == ('[tool.mnist-arch.models.net]\nmodel = "net.py:Net"\n\n'
                                "[tool.mnist-arch.models.net.rule]\nthreshold = 0.9\nepochs = 2\nlr = 0.01\n")
    odd = ('[tool.mnist-arch.models.net.rule]\nthreshold = 0.9\nepochs = 2\n\n'
           '[tool.mnist-arch.models.net.rule.optimizer_kwargs]\nmomentum = 0.9\n')
    path.write_text(odd, encoding="utf-8")
    with pytest.raises(MnistArchError, match="nothing was written"):
        tune_write.write_rule(path, "net", {"threshold": 0.9, "epochs": 2, "optimizer_kwargs": {"momentum": 0.8}})
    assert path.read_text() == odd


# ---------------------------------------------------------------------------------------------
# PostgreSQL: a throw-away server on localhost (Debian's package), two workers against it


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own in a temporary folder, on a free port of 127.0.0.1 (its socket in that
    folder too); as the `postgres` user where the tests run as root (the server refuses root). Skipped with
    the reason where it cannot start: no server binaries (apt-get install postgresql), no such user, ..."""
    import glob
    import shutil
    import tempfile

    binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    initdb = binaries[-1] if binaries else shutil.which("initdb")
    if initdb is None:
        pytest.skip("no PostgreSQL server here (Debian: apt-get install postgresql; .ci/run installs it where apt "
                    "can): the test against a real server is skipped")
    pg_ctl = str(Path(initdb).with_name("pg_ctl"))
    folder = Path(tempfile.mkdtemp(prefix="mnist-arch-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        import pwd

        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip("running as root, and there is no postgres user to run the server as")
        runuser = shutil.which("runuser") or next(
            (p for p in ("/usr/sbin/runuser", "/sbin/runuser") if os.access(p, os.X_OK)), None)
        if runuser is None:  # util-linux's; a PATH without the sbin folders hides it
            shutil.rmtree(folder)
            pytest.skip("running as root, and no runuser to run the server as the postgres user")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", "postgres", "--"]
    port, data = _free_port(), folder / "data"

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120)

    made = call(initdb, "-D", str(data), "-A", "trust", "-U", "tune", "--no-sync")
    started = made.returncode == 0 and call(
        pg_ctl, "-D", str(data), "-l", str(folder / "log"), "-w", "-t", "60", "-o",
        f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off", "start").returncode == 0
    if not started:
        log = (folder / "log").read_text(errors="replace") if (folder / "log").exists() else made.stderr
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"the PostgreSQL server could not start here: {log.strip()[-500:]}")
    try:
        yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    finally:
        call(pg_ctl, "-D", str(data), "-m", "immediate", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_one_study_on_a_postgresql_server(tmp_path, mnist_root, postgres_url):
    """What machines sharing a study do, on one machine: the same command, pointed at one server."""
    folder = repo(tmp_path)
    procs = [start(folder, mnist_root, "--trials", "4", "--no-seeds", "--storage", postgres_url) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows = trials(optuna.storages.RDBStorage(postgres_url))
    assert [t.number for t in rows] == list(range(len(rows)))
    assert len(finished(rows)) == 4 and "RUNNING" not in states(rows), states(rows)
    assert {t.user_attrs["owner"]["pid"] for t in finished(rows)} <= {p.pid for p in procs}
    assert "study in postgresql://tune@127.0.0.1" in outputs[0][1]
