"""The rule tier (issue 27, docs/rule.md): a course's rule judged as it is stated (a threshold held for K epochs
in a row within N), the recipe fields a course uses and their errors, the estimate, `mnist-arch train --tier rule`
and the plugin's `rule` items. Tiny runs only: logistic regression on 1,024 training images."""

import json
import math
import re

import pytest

from mnist_arch.cli import main
from mnist_arch.project import parse_project, read_table
from mnist_arch.runs import Epoch, Estimate, TrainResult, duration, epoch_line, judge_rule, rule_table
from mnist_arch.spec import Augment

pytest_plugins = ["pytester"]


def history(*accuracies: float, loss: float = 0.1) -> list[Epoch]:
    return [Epoch(i, loss, 0.9, loss, a, 0.01, 10.0) for i, a in enumerate(accuracies, 1)]


# ---------------------------------------------------------------------------------------------
# The judgement, on synthetic histories


def test_held_for_k_epochs_in_a_row_passes_there():
    verdict = judge_rule(history(0.990, 0.994, 0.995, 0.996), 0.994, 15, 3)
    assert (verdict.passed, verdict.settled, verdict.held) == (True, True, (2, 3, 4))
    assert verdict.reason == "passed: epochs 2-4 reached 99.40% (99.40%, 99.50%, 99.60%)"


def test_reached_once_then_lost_fails():
    # epochs 3 and 6 reach it, never 3 in a row; after epoch 6 of 7, 3 in a row no longer fit
    verdict = judge_rule(history(0.98, 0.99, 0.995, 0.993, 0.993, 0.994), 0.994, 7, 3)
    assert (verdict.passed, verdict.settled, verdict.held) == (False, True, ())
    assert verdict.reason == ("failed: 99.40% reached in epoch(s) 3, 6 but never 3 in a row; best 99.50% in epoch 3; "
                              "stopped after epoch 6: 3 in a row no longer fit in 7")


def test_never_reached_fails_only_when_it_can_no_longer_pass():
    assert not judge_rule(history(0.97, 0.98), 0.994, 4, 2).settled  # epochs 3 and 4 could still hold it
    verdict = judge_rule(history(0.97, 0.98, 0.985), 0.994, 4, 2)
    assert (verdict.passed, verdict.settled) == (False, True)
    assert verdict.reason == ("failed: 99.40% never reached; best 98.50% in epoch 3; stopped after epoch 3: 2 in a "
                              "row no longer fit in 4")
    full = judge_rule(history(0.97, 0.98, 0.985, 0.99), 0.994, 4, 1)
    assert full.reason == "failed: 99.40% never reached; best 99.00% in epoch 4"


def test_a_window_after_the_last_allowed_epoch_does_not_count():
    assert not judge_rule(history(0.9, 0.995, 0.995, 0.995), 0.994, 3, 3).passed


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_loss_that_is_not_a_number_fails_at_once(bad):
    epochs = history(0.995, 0.995)
    epochs[1].train_loss = bad
    verdict = judge_rule(epochs, 0.994, 15, 2)
    assert (verdict.passed, verdict.settled) == (False, True)
    assert verdict.reason.startswith(f"the loss is not a number in epoch 2 (train loss {bad}, test loss 0.1)")


def test_a_collapse_to_one_class_fails_even_above_a_low_threshold():
    collapsed = {"class": 1, "share": 1.0}
    verdict = judge_rule(history(0.1135, 0.1135), 0.1, 5, 2, collapsed)
    assert (verdict.passed, verdict.settled) == (False, True)
    assert verdict.reason == "collapsed: 100.0% of the test predictions are class 1 (an MNIST class is about 10%)"


def rule_result(*accuracies: float, consecutive: int = 2, epochs: int = 5) -> TrainResult:
    return TrainResult("net", "rule", len(accuracies), 50.0, accuracies[-1], history(*accuracies), threads=2,
                       min_accuracy=0.994, seed=3, consecutive=consecutive, max_epochs=epochs)


def test_a_rule_runs_report_json_and_markdown():
    result = rule_result(0.99, 0.995, 0.996)
    data = result.to_dict()
    assert data["rule"] == {"threshold": 0.994, "epochs": 5, "consecutive": 2}
    assert (data["passed"], data["held"], data["seed"]) == (True, [2, 3], 3)
    assert [e["test_accuracy"] for e in data["history"]] == [0.99, 0.995, 0.996]
    assert data["reason"] == "passed: epochs 2-3 reached 99.40% (99.50%, 99.60%)"
    table = rule_table(result).splitlines()
    assert table[:5] == ["| epoch | test accuracy | train loss | held? | seconds |",
                         "| ---: | ---: | ---: | --- | ---: |",
                         "| 1 | 99.00% | 0.1000 | no | 10.0 |",
                         "| 2 | 99.50% | 0.1000 | yes (1/2) | 10.0 |",
                         "| 3 | 99.60% | 0.1000 | yes (2/2) | 10.0 |"]
    assert table[-1].startswith("**PASS**: net rule: 99.40% in 2 epoch(s) in a row within 5, seed 3: passed: ")
    failed = rule_result(0.99, 0.995, 0.99, 0.99, 0.99)
    assert not failed.passed and "FAIL" in rule_table(failed).splitlines()[-1]
    # a run judged on its last epoch (the quick tier) reports as before
    quick = TrainResult("net", "quick", 1, 5.0, 0.98, history(0.98), min_accuracy=0.97)
    assert quick.passed and "rule" not in quick.to_dict()


# ---------------------------------------------------------------------------------------------
# The estimate and the per-epoch line


def test_the_estimate_line():
    estimate = Estimate(15, 469, 0.1, 2.0, "this CPU (AVX2)", 2, "fp32", at_most=True)
    assert estimate.seconds == pytest.approx(15 * (46.9 + 2.0))
    assert estimate.line("net") == ("net: 15 epochs, at most about 12 min 14 s on this CPU (AVX2), 2 threads, fp32 "
                                    "(estimate: 0.100 s a step x 469 steps + 2.0 s of test evaluation an epoch)")
    five = Estimate(1, 469, 0.1, 2.0, "this GPU (H100)", 0, "fp32", runs=5)
    assert five.line("net").startswith("net: 5 runs of 1 epoch, about 4 min 05 s on this GPU (H100), fp32 ")
    assert (duration(42.4), duration(3725)) == ("42 s", "1 h 02 min")


def test_each_epochs_line_says_elapsed_time_left_and_the_streak():
    line = epoch_line("net", history(0.995, 0.99, 0.996), 15, 0.994, 3)
    assert line.startswith("net epoch   3  train loss 0.1000")
    assert line.endswith("elapsed 30 s, at most about 2 min 00 s left  held 99.40% (1/3 in a row)")
    assert epoch_line("net", history(0.9), 1).endswith("10.0s  elapsed 10 s, about 0 s left")


# ---------------------------------------------------------------------------------------------
# The declaration: every new field, and its error

MODEL = """\
import torch.nn as nn


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1))
"""

COURSE_RULE = """\
threshold = 0.994
epochs = 15
consecutive = 3
seed = 2
optimizer = "sgd"
lr = 0.05
optimizer_kwargs = {momentum = 0.9, nesterov = true, weight_decay = 5e-4}
schedule = "step"
schedule_kwargs = {step_size = 6, gamma = 0.1}
rotation = 7
translate = 0.1
scale = [0.9, 1.1]
shear = 5
"""


def declare(tmp_path, rule: str, train: str = ""):
    (tmp_path / "net.py").write_text(MODEL)
    path = tmp_path / "pyproject.toml"
    path.write_text('[tool.mnist-arch.models.net]\nmodel = "net.py:Linear"\n'
                    + (f"[tool.mnist-arch.models.net.train]\n{train}\n" if train else "")
                    + f"[tool.mnist-arch.models.net.rule]\n{rule}\n")
    (model,) = parse_project(path, read_table(path)).models
    return model


def test_a_course_rule_declares_its_own_tier_beside_the_quick_floor(tmp_path):
    model = declare(tmp_path, COURSE_RULE, train="min_accuracy = 0.9")
    assert model.error is None, model.error
    rule, quick = model.spec.recipes["rule"], model.spec.recipes["quick"]
    assert (rule.min_accuracy, rule.epochs, rule.consecutive, rule.seed) == (0.994, 15, 3, 2)
    assert (rule.optimizer, rule.lr, dict(rule.optimizer_kwargs)) == ("sgd", 0.05, {"momentum": 0.9, "nesterov": True,
                                                                                     "weight_decay": 5e-4})
    assert (rule.schedule, dict(rule.schedule_kwargs)) == ("step", {"step_size": 6, "gamma": 0.1})
    assert rule.augment == Augment(7.0, 0.1, (0.9, 1.1), 5.0)
    assert (quick.epochs, quick.optimizer, quick.consecutive, quick.augment) == (1, "adam", None, None)


@pytest.mark.parametrize("schedule, kwargs", [("multistep", "{milestones = [6, 12], gamma = 0.5}"),
                                              ("cosine", "{eta_min = 0.001}"), ("cosine", "{T_max = 20}"),
                                              ("onecycle", "{max_lr = 0.1}"), ("plateau", "{factor = 0.5}")])
def test_every_schedule_is_declared(tmp_path, schedule, kwargs):
    model = declare(tmp_path, f'threshold = 0.99\nepochs = 3\nschedule = "{schedule}"\nschedule_kwargs = {kwargs}')
    assert model.error is None and model.spec.recipes["rule"].schedule == schedule, model.error


RULE = "threshold = 0.99\nepochs = 15\n"
SGD = RULE + 'optimizer = "sgd"\n'


@pytest.mark.parametrize("rule, field, value, expected", [
    ("epochs = 15", None, None, "needs threshold: the rule is a test accuracy to reach"),
    ("threshold = 0.99", None, None, "needs epochs: the rule is a test accuracy to reach"),
    ("threshold = 99.4\nepochs = 15", "threshold", "99.4", "a fraction of the 10,000 test images in (0, 1]"),
    ("threshold = 0\nepochs = 15", "threshold", "0", "a fraction of the 10,000 test images in (0, 1]"),
    ("threshold = 0.99\nepochs = 0", "epochs", "0", "a whole number of epochs from 1 to 1,000"),
    ("threshold = 0.99\nepochs = 2000", "epochs", "2000", "a whole number of epochs from 1 to 1,000"),
    (RULE + "consecutive = 0", "consecutive", "0", "a whole number of epochs from 1 to epochs (15)"),
    (RULE + "consecutive = 16", "consecutive", "16", "a whole number of epochs from 1 to epochs (15)"),
    (RULE + "seed = -1", "seed", "-1", "a whole number of at least 0"),
    (RULE + "rotation = 200", "rotation", "200", "a number of degrees from 0 to 180"),
    (RULE + 'rotation = "7"', "rotation", "'7'", "a number of degrees from 0 to 180"),
    (RULE + "translate = 1.5", "translate", "1.5", "a fraction of the image from 0 to 1"),
    (RULE + "scale = [1.1, 0.9]", "scale", "[1.1, 0.9]", "two numbers [low, high] with 0 < low <= high <= 10"),
    (RULE + "scale = 0.9", "scale", "0.9", "two numbers [low, high] with 0 < low <= high <= 10"),
    (RULE + "shear = 90", "shear", "90", "a number of degrees from 0 to below 90"),
    (RULE + 'schedule = "steps"', "schedule", "'steps'", "one of onecycle, plateau, step, multistep, cosine"),
    (RULE + 'schedule = "step"', "schedule_kwargs", "{}", "a table with step_size: schedule = 'step' needs it"),
    (RULE + 'schedule = "step"\nschedule_kwargs = {step_size = 0}', "schedule_kwargs.step_size", "0",
     "a whole number of epochs of at least 1"),
    (RULE + 'schedule = "step"\nschedule_kwargs = {step_size = 5, gamma = 1.5}', "schedule_kwargs.gamma", "1.5",
     "a number above 0 and at most 1"),
    (RULE + 'schedule = "step"\nschedule_kwargs = {step_size = 5, milestones = [3]}',
     "schedule_kwargs.milestones", "[3]", "left out: schedule = 'step' takes step_size and gamma"),
    (RULE + 'schedule = "multistep"', "schedule_kwargs", "{}", "a table with milestones"),
    (RULE + 'schedule = "multistep"\nschedule_kwargs = {milestones = [12, 6]}', "schedule_kwargs.milestones",
     "[12, 6]", "a list of epochs in increasing order, each at least 1"),
    (RULE + 'schedule = "cosine"\nschedule_kwargs = {T_max = 0}', "schedule_kwargs.T_max", "0",
     "a whole number of epochs of at least 1 (default: the run's epochs)"),
    (RULE + 'schedule = "cosine"\nschedule_kwargs = {eta_min = -1}', "schedule_kwargs.eta_min", "-1",
     "a number of at least 0"),
    (SGD + "optimizer_kwargs = {momentum = 1.0}", "optimizer_kwargs.momentum", "1.0", "a number from 0 to below 1"),
    (SGD + "optimizer_kwargs = {dampening = -0.1}", "optimizer_kwargs.dampening", "-0.1", "a number from 0 to below 1"),
    (SGD + "optimizer_kwargs = {weight_decay = -1}", "optimizer_kwargs.weight_decay", "-1",
     "a number from 0 to below 1"),
    (SGD + 'optimizer_kwargs = {nesterov = "yes", momentum = 0.9}', "optimizer_kwargs.nesterov", "'yes'",
     "true or false"),
    (SGD + "optimizer_kwargs = {nesterov = true}", "optimizer_kwargs.nesterov", "True",
     "false unless momentum is above 0 and dampening is 0"),
    (RULE + 'optimizer = "adam"\noptimizer_kwargs = {momentum = 0.9}', "optimizer_kwargs.momentum", "0.9",
     "left out: it is SGD's setting, and optimizer = 'adam'"),
])
def test_each_rule_field_has_a_one_paragraph_error(tmp_path, rule, field, value, expected):
    message = declare(tmp_path, rule).error
    assert message is not None and "\n" not in message
    assert message.startswith(f"{tmp_path / 'pyproject.toml'} [tool.mnist-arch.models.net.rule]"), message
    if field is not None:
        assert f": '{field}' must be " in message and message.endswith(f", found {value}."), message
    assert expected in message, message


def test_min_accuracy_is_the_threshold_in_a_rule_table(tmp_path):
    message = declare(tmp_path, RULE + "min_accuracy = 0.99").error
    assert "unknown field(s) 'min_accuracy'; the table may set threshold, consecutive, seed, " in message


def test_the_train_table_takes_the_new_fields_too(tmp_path):
    model = declare(tmp_path, RULE, train='min_accuracy = 0.9\nrotation = 10\nschedule = "cosine"')
    quick = model.spec.recipes["quick"]
    assert (quick.augment.degrees, quick.schedule, quick.consecutive) == (10.0, "cosine", None)


def test_a_bad_rule_exits_2_from_the_command_line(tmp_path, monkeypatch, capsys):
    declare(tmp_path, RULE + "rotation = 200")
    monkeypatch.chdir(tmp_path)
    assert main(["train", "net", "--tier", "rule"]) == 2
    err = capsys.readouterr().err
    assert "'rotation' must be a number of degrees from 0 to 180" in err and "Traceback" not in err


def test_a_model_without_a_rule_says_how_to_declare_one(tmp_path, monkeypatch, capsys):
    (tmp_path / "net.py").write_text(MODEL)
    (tmp_path / "pyproject.toml").write_text('[tool.mnist-arch.models.net]\nmodel = "net.py:Linear"\n')
    monkeypatch.chdir(tmp_path)
    assert main(["train", "net", "--tier", "rule"]) == 2
    assert "declares no rule: add a [tool.mnist-arch.models.net.rule] table with threshold, epochs and " \
           "consecutive" in capsys.readouterr().err


def test_the_rule_states_its_own_epochs(tmp_path, monkeypatch, capsys):
    declare(tmp_path, RULE)
    monkeypatch.chdir(tmp_path)
    assert main(["train", "net", "--tier", "rule", "--epochs", "3"]) == 2
    assert "--tier rule judges the rule" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Training: the schedules step each epoch, the rule stops the run, the estimate changes nothing


@pytest.fixture
def small(mnist_root):
    from mnist_arch.data import MNIST, load_mnist

    data = load_mnist(mnist_root)
    return MNIST(data.train_images[:1024], data.train_labels[:1024], data.test_images, data.test_labels)


def linear():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))


def recipe(**changes):
    from mnist_arch.spec import Recipe

    return Recipe(**{"epochs": 3, "batch_size": 128, "optimizer": "sgd", "lr": 0.1, "min_accuracy": 0.5, **changes})


@pytest.mark.parametrize("schedule, kwargs, lrs", [
    ("step", {"step_size": 1, "gamma": 0.5}, [0.1, 0.05, 0.025]),
    ("multistep", {"milestones": [2], "gamma": 0.1}, [0.1, 0.1, 0.01]),
    ("cosine", {}, [0.1, 0.075, 0.025]),  # T_max: the run's 3 epochs
])
def test_epoch_schedules_step_once_an_epoch(small, schedule, kwargs, lrs):
    from mnist_arch.train import RunOptions, train_model

    result = train_model(linear(), recipe(schedule=schedule, schedule_kwargs=kwargs), small, RunOptions(threads=1))
    assert [e.lr for e in result.history] == pytest.approx(lrs)


def test_the_rule_stops_the_run_once_its_verdict_is_settled(small):
    from mnist_arch.train import RunOptions, train_model

    passed = train_model(linear(), recipe(epochs=6, consecutive=2, min_accuracy=0.5), small, RunOptions(threads=1))
    assert (passed.passed, passed.epochs, passed.max_epochs, passed.judged().held) == (True, 2, 6, (1, 2))
    failed = train_model(linear(), recipe(epochs=4, consecutive=3, min_accuracy=0.999), small, RunOptions(threads=1))
    assert (failed.passed, failed.epochs) == (False, 2)  # after epoch 2, 3 in a row no longer fit in 4
    assert failed.judged().reason.endswith("stopped after epoch 2: 3 in a row no longer fit in 4")


def test_a_run_whose_loss_blows_up_stops_and_fails_with_that_reason(small):
    from mnist_arch.train import RunOptions, train_model

    result = train_model(linear(), recipe(lr=1e38, epochs=5, consecutive=1), small, RunOptions(threads=1))
    assert (result.passed, result.epochs) == (False, 1)
    assert result.judged().reason.startswith("the loss is not a number in epoch 1 (train loss nan, ")


def test_rotation_trains(small):
    from mnist_arch.train import RunOptions, train_model

    plain = train_model(linear(), recipe(epochs=1), small, RunOptions(threads=1))
    rotated = train_model(linear(), recipe(epochs=1, augment=Augment(degrees=15)), small, RunOptions(threads=1))
    assert rotated.history[0].train_loss != plain.history[0].train_loss and rotated.test_accuracy > 0.5


def test_the_estimate_is_measured_on_the_runs_own_steps_and_changes_nothing(small):
    from mnist_arch.train import RunOptions, train_model

    said = []
    timed = train_model(linear(), recipe(augment=Augment(degrees=7)), small,
                        RunOptions(threads=1, on_estimate=said.append))
    plain = train_model(linear(), recipe(augment=Augment(degrees=7)), small, RunOptions(threads=1))
    (estimate,) = said
    assert (estimate.epochs, estimate.steps_per_epoch, estimate.threads, estimate.precision) == (3, 8, 1, "fp32")
    assert estimate.step_seconds > 0 and estimate.eval_seconds > 0 and estimate.hardware.startswith("this CPU")
    assert [(e.train_loss, e.test_accuracy) for e in timed.history] == [
        (e.train_loss, e.test_accuracy) for e in plain.history]


# ---------------------------------------------------------------------------------------------
# The faces: `mnist-arch train --tier rule`, and the plugin's items

TINY = """\
epochs = 4
consecutive = 2
train_subset = 1024
optimizer = "sgd"
lr = 0.05
optimizer_kwargs = {momentum = 0.9, nesterov = true}
schedule = "step"
schedule_kwargs = {step_size = 2, gamma = 0.5}
rotation = 7
"""


def test_train_tier_rule_passes_and_fails_end_to_end(tmp_path, monkeypatch, capsys, mnist_root):
    (tmp_path / "net.py").write_text(MODEL)
    (tmp_path / "pyproject.toml").write_text(
        '[tool.mnist-arch.models.easy]\nmodel = "net.py:Linear"\n'
        f"[tool.mnist-arch.models.easy.rule]\nthreshold = 0.7\n{TINY}"
        '[tool.mnist-arch.models.hard]\nmodel = "net.py:Linear"\n'
        f"[tool.mnist-arch.models.hard.rule]\nthreshold = 0.99\n{TINY}")
    monkeypatch.chdir(tmp_path)
    data = ["--data-dir", str(mnist_root), "--device", "cpu"]

    assert main(["train", "easy", "--tier", "rule", *data]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert re.match(r"easy: 4 epochs, at most about \d+ s on this CPU \(\w+\), 1 thread, fp32 \(estimate: ", lines[0])
    assert re.match(r"easy epoch   1  .* elapsed \d+ s, at most about \d+ s left  held 70.00% \(1/2 in a row\)",
                    lines[1]), lines
    assert lines[-1].startswith("PASS: easy (rule, seed 0) rule: 70.00% in 2 epoch(s) in a row within 4, seed 0: "
                                "passed: epochs 1-2 reached 70.00% ("), lines

    assert main(["train", "hard", "--tier", "rule", "--format", "markdown", *data]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["| epoch | test accuracy | train loss | held? | seconds |",
                       "| ---: | ---: | ---: | --- | ---: |"]
    assert [row.split(" | ")[3] for row in out[2:5]] == ["no", "no", "no"] and out[5] == ""  # 3 epochs, then settled
    assert out[6].startswith("**FAIL**: hard rule: 99.00% in 2 epoch(s) in a row within 4, seed 0: failed: 99.00% "
                             "never reached; best ") and "stopped after epoch 3" in out[6]

    assert main(["train", "easy", "--tier", "rule", "--seed", "1", "--format", "json", *data]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rule"] == {"threshold": 0.7, "epochs": 4, "consecutive": 2}
    assert (report["seed"], report["passed"], report["held"], report["recipe"]) == (1, True, [1, 2], "rule")
    assert all(0.7 <= e["test_accuracy"] <= 1 for e in report["history"])


def test_the_rule_item_is_deselected_unless_asked_for(pytester, mnist_root):
    pytester.makepyprojecttoml('[tool.mnist-arch.models.easy]\nmodel = "net.py:Linear"\n'
                               f"[tool.mnist-arch.models.easy.rule]\nthreshold = 0.7\n{TINY}")
    (pytester.path / "net.py").write_text(MODEL)
    data = f"--mnist-arch-data={mnist_root}"
    plain = pytester.runpytest_subprocess("-p", "no:benchmark", data)
    plain.assert_outcomes(passed=2, deselected=1)  # load and output_shape run; the rule waits to be asked for
    asked = pytester.runpytest_subprocess("-p", "no:benchmark", "-m", "rule", "-v", data)
    asked.assert_outcomes(passed=1, deselected=2)
    asked.stdout.fnmatch_lines(["mnist-arch rule: easy: 4 epochs, at most about * on this CPU *",
                                "mnist-arch rule: easy epoch   1 *held 70.00% (1/2 in a row)",
                                "*pyproject.toml::easy::rule PASSED*",
                                "*mnist-arch training*",
                                "easy: rule: 70.00% in 2 epoch(s) in a row within 4, seed 0: passed: *"])


class _Config:
    def __init__(self, option: bool, markexpr: str) -> None:
        self.option = type("Option", (), {"markexpr": markexpr})()
        self.hook = type("Hook", (), {"pytest_deselected": lambda self, items: self.deselected.extend(items),
                                      "deselected": []})()
        self._rule = option

    def getoption(self, name, default=None):
        return self._rule if name == "mnist_arch_rule" else default


class _Item:
    def __init__(self, rule: bool) -> None:
        self.rule = rule

    def get_closest_marker(self, name):
        return object() if name == "rule" and self.rule else None


@pytest.mark.parametrize("option, markexpr, kept", [(False, "", 1), (False, "not slow", 1), (True, "", 2),
                                                    (True, "not slow", 2), (False, "rule", 2),
                                                    (False, "training or rule", 2), (False, "rules", 1)])
def test_what_asks_for_the_rule_items(option, markexpr, kept):
    from mnist_arch.pytest_plugin import pytest_collection_modifyitems

    config, items = _Config(option, markexpr), [_Item(False), _Item(True)]
    pytest_collection_modifyitems(config, items)
    assert len(items) == kept and len(config.hook.deselected) == 2 - kept


def test_an_accuracy_exactly_at_the_threshold_meets_it():
    """9,930 of 10,000 right is 0.993, not the float32 mean's 0.99299997 that would miss a 0.993 threshold."""
    import torch
    from torch import nn

    from mnist_arch.runs import Epoch, judge_rule
    from mnist_arch.spec import Recipe
    from mnist_arch.train import evaluate

    class AlwaysZero(nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([0]), 1.0)

    labels = torch.zeros(10_000, dtype=torch.long)
    labels[:70] = 1
    recipe = Recipe(epochs=1, batch_size=100, optimizer="sgd", lr=0.1, min_accuracy=0.993)
    _, accuracy, _ = evaluate(AlwaysZero(), torch.zeros(10_000, 28, 28, dtype=torch.uint8), labels, recipe)
    assert accuracy == 0.993
    held = [Epoch(1, 0.1, 0.99, 0.1, accuracy, 0.1, 1.0)]
    assert judge_rule(held, threshold=0.993, epochs=1, consecutive=1).passed
