
"""Issue 25, part 2: `gap` and `fc` judge the classifier head, from the data flow of the pass that runs
(mnist_arch/head.py). The models are in tests/user_models/heads.py; each body turns the 28x28 image into a
16x7x7 map with one conv (16 channels: 4*4+1 = 17 parameters each)."""

import dataclasses
import json

import pytest
import torch.nn as nn

from mnist_arch.checks import check_model
from mnist_arch.cli import main
from mnist_arch.registry import create_model, get_spec, list_models
from mnist_arch.spec import Spec
from mnist_arch.trace import example_input, record_calls
from tests.user_models import heads
from tests.user_models.nets import FourD

GAP = Spec(require=frozenset({"gap"}))
FC = Spec(require=frozenset({"fc"}))
EITHER = Spec(require_any=(frozenset({"gap", "fc"}),))

SE_POOL = ("the only global average pool that ran, adaptive_avg_pool2d in `se.pool`, is off the head's path "
           "(its result feeds mul on a 16x7x7 map: a gate inside the network)")


def verdict(model, spec, check_id):
    """(passed, message) of one check."""
    (check,) = [c for c in check_model(model, spec).checks if c.id == check_id]
    return check.passed, check.message


def test_gap_fails_on_a_squeeze_excitation_model_whose_head_flattens():
    model = heads.SEFlatten()
    assert any(isinstance(m, nn.AdaptiveAvgPool2d) for m in model.modules())  # what an isinstance scan sees
    assert verdict(model, GAP, "require.gap") == (
        False, "gap: the classifier flattens a 16x7x7 map into Linear(784, 10), not a globally average-pooled map; "
               + SE_POOL)
    # the `gap` module it defines and never calls is not mentioned; the SE block's Linears are not the head's
    assert verdict(model, FC, "require.fc") == (
        True, "fc: the head is fully connected: Linear(784, 10); it flattens a 16x7x7 map into Linear(784, 10)")


@pytest.mark.parametrize("form, pool, fc", [
    ("adaptive_module", "adaptive_avg_pool2d", "Linear(16, 10)"),
    ("avgpool_module", "avg_pool2d", None),
    ("avg_pool2d", "avg_pool2d", "Linear(16, 10)"),
    ("mean", "mean over dims [2, 3]", "Linear(16, 10)"),
    ("adaptive_function", "adaptive_avg_pool2d", None),
    ("mean_keepdim", "mean over dims [2, 3]", None),
])
def test_gap_passes_on_each_gap_head(form, pool, fc):
    model = heads.GapHead(form)
    said = f"average-pools a 16x7x7 map to 1x1 ({pool})"
    assert verdict(model, GAP, "require.gap") == (True, f"gap: the classifier {said}")
    # A Linear after the pool is a fully connected layer; a 1x1 convolution after it is not.
    assert verdict(model, FC, "require.fc") == (
        (True, f"fc: the head is fully connected: {fc}; it {said}") if fc
        else (False, f"fc: the head has no fully connected layer: it {said}"))
    assert verdict(model, EITHER, "require_any.fc|gap")[0]


def test_a_mean_over_a_flattened_map_is_a_global_average_pool():
    assert verdict(heads.GapHead("flatten_then_mean"), GAP, "require.gap") == (
        True, "gap: the classifier average-pools a 16x49 map to 1x1 (mean over dims [2])")


def test_linears_inside_a_gate_are_not_a_fully_connected_head():
    model = heads.SEGapConv()
    assert verdict(model, GAP, "require.gap") == (
        True, "gap: the classifier average-pools a 16x7x7 map to 1x1 (adaptive_avg_pool2d)")
    assert verdict(model, FC, "require.fc") == (
        False, "fc: the head has no fully connected layer: it average-pools a 16x7x7 map to 1x1 "
               "(adaptive_avg_pool2d); every Linear that ran (Linear(16, 4) in `se.fc1`, Linear(4, 16) in "
               "`se.fc2`) is off the head's path (their result feeds mul on a 16x7x7 map: a gate inside the network)")


def test_a_partial_average_pool_is_an_fc_head_not_gap():
    """docs/architectures.md: a 2x2 AvgPool on a 7x7 map leaves 3x3 positions, which the Linear reads: FC."""
    model = heads.AvgPool2x2()
    flattened = ("flattens a 16x3x3 map (the output of avg_pool2d with kernel 2x2 on a 7x7 map) into "
                 "Linear(144, 10)")
    assert verdict(model, GAP, "require.gap") == (
        False, f"gap: the classifier {flattened}, not a globally average-pooled map")
    assert verdict(model, FC, "require.fc") == (
        True, f"fc: the head is fully connected: Linear(144, 10); it {flattened}")
    assert verdict(model, EITHER, "require_any.fc|gap") == (True, "one of fc, gap: found fc (linear)")


def test_every_path_must_pass_the_pool():
    assert verdict(heads.TwoHeads(), GAP, "require.gap") == (
        False, "gap: the classifier flattens a 16x7x7 map into Linear(784, 10), not a globally average-pooled map")


def test_a_convolution_covering_the_whole_map_is_fc():
    model = heads.WholeMapConv()
    assert verdict(model, FC, "require.fc") == (
        True, "fc: the head is fully connected: conv2d; it runs conv2d with a 7x7 kernel over the whole of a "
              "16x7x7 map")
    assert not verdict(model, GAP, "require.gap")[0]


@pytest.mark.parametrize("name", list_models())
def test_the_references_declared_fc_still_passes(name):
    model, spec = create_model(name), get_spec(name)
    assert "fc" in spec.require
    report = check_model(model, dataclasses.replace(spec, require_any=(frozenset({"gap", "fc"}),)), name=name)
    checks = {c.id: c for c in report.checks}
    assert report.passed, [c.message for c in report.checks if not c.passed]
    assert checks["require.fc"].message.startswith("fc: the head is fully connected: ")
    assert checks["require_any.fc|gap"].passed


def test_require_any_passes_on_both_head_kinds():
    assert verdict(heads.GapHead("adaptive_function"), EITHER, "require_any.fc|gap") == (
        True, "one of fc, gap: found gap (adaptive_avg_pool2d)")
    assert verdict(heads.SEFlatten(), EITHER, "require_any.fc|gap") == (True, "one of fc, gap: found fc (linear)")
    assert verdict(heads.GapHead("adaptive_module"), EITHER, "require_any.fc|gap") == (
        True, "one of fc, gap: found fc (linear); gap (adaptive_avg_pool2d)")


@pytest.mark.parametrize("model, head", [
    (heads.MaxHead(), "max-pools a 10x7x7 map to 1x1 (adaptive_max_pool2d, a global max pool, not an average)"),
    (heads.CentreHead(), "reads a 10x7x7 map through indexing (x[...]) to 10"),
])
def test_require_any_fails_on_a_head_that_is_neither(model, head):
    assert verdict(model, EITHER, "require_any.fc|gap") == (
        False, f"none of fc, gap: the classifier {head}: no global average pool on every path and no fully "
               "connected layer")
    assert verdict(model, GAP, "require.gap") == (
        False, f"gap: the classifier {head}, not a globally average-pooled map")
    assert verdict(model, FC, "require.fc") == (False, f"fc: the head has no fully connected layer: it {head}")


def test_a_group_with_other_words_gives_each_reason():
    spec = Spec(require_any=(frozenset({"gap", "dropout"}),))
    assert verdict(heads.AvgPool2x2(), spec, "require_any.dropout|gap") == (
        False, "none of dropout, gap: gap: the classifier flattens a 16x3x3 map (the output of avg_pool2d with "
               "kernel 2x2 on a 7x7 map) into Linear(144, 10), not a globally average-pooled map; dropout: no "
               "dropout (any Dropout variant or F.dropout*, p > 0) ran in a training-mode forward pass")


@pytest.mark.parametrize("model, gap, fc", [
    (heads.NoMap(), "the classifier flattens the 1x28x28 input into Linear(784, 32), not a globally "
                    "average-pooled map", None),
    (FourD(), "the output is a 10x26x26 map, not one score per class, so there is no classifier head", ""),
    (heads.ConstantOut(), "the output depends on no spatial map the trace saw, so there is no classifier head "
                          "to judge", ""),
    (heads.Untraced(), "no call the trace saw wrote the model's output, so its head cannot be followed", ""),
    (heads.DictOut("mean_keepdim"), None, "the head has no fully connected layer: it average-pools a 16x7x7 map "
                                          "to 1x1 (mean over dims [2, 3])"),
])
def test_odd_models_get_a_clear_verdict(model, gap, fc):
    """No spatial map, a spatial output, no input at all, an output the trace cannot see, a dict output with
    in-place ops after the pool: a verdict in words, never a crash. `fc` "" says the same as `gap`."""
    report = check_model(model, Spec(require=frozenset({"gap", "fc"})))
    checks = {c.id: c for c in report.checks}
    for word, said in (("gap", gap), ("fc", fc if fc != "" else gap)):
        assert checks[f"require.{word}"].passed is (said is None)
        if said is not None:
            assert checks[f"require.{word}"].message == f"{word}: {said}"


def test_each_call_is_recorded_with_the_module_that_made_it():
    calls, _ = record_calls(heads.SEFlatten(), example_input(2, (1, 28, 28)))
    assert [(c.name, c.module) for c in calls if c.name in ("conv2d", "adaptive_avg_pool2d", "linear", "mul")] == [
        ("conv2d", "conv"), ("adaptive_avg_pool2d", "se.pool"), ("linear", "se.fc1"), ("linear", "se.fc2"),
        ("mul", "se"), ("linear", "fc")]


def test_the_command_line_says_what_the_head_does(capsys, user_models):
    code = main(["check", "--model", f"{user_models / 'heads.py'}:SEFlatten", "--require", "gap", "--format", "json"])
    out, _ = capsys.readouterr()
    (check,) = [c for c in json.loads(out)["models"][0]["checks"] if c["id"] == "require.gap"]
    assert code == 1 and check["measured"] == "none" and SE_POOL in check["message"]
