"""The engine's rules, each on a small model of the kind users write (tests/user_models/nets.py)."""

import pytest
import torch
import torch.nn as nn

from mnist_arch.checks import check_model
from mnist_arch.errors import MnistArchError
from mnist_arch.loader import load_model
from mnist_arch.spec import Layer, Spec
from mnist_arch.trace import count_parameters, layer_output_shapes

ALL = frozenset({"batchnorm", "dropout", "gap", "fc"})


@pytest.fixture
def nets(user_models):
    return lambda attr: load_model(f"{user_models / 'nets.py'}:{attr}")


def verdicts(report):
    return {c.id: c.passed for c in report.checks}


def present(report):
    """Which required features the engine found (every feature is required in these tests)."""
    return {c.id.split(".")[1] for c in report.checks if c.id.startswith("require.") and c.passed}


@pytest.mark.parametrize("attr, expected", [
    ("FunctionalDropout", {"dropout", "gap", "fc"}),
    ("Dropout2dNet", {"dropout", "gap", "fc"}),
    ("ZeroDropout", {"fc"}),
    ("GroupNormNet", {"gap", "fc"}),
    ("FunctionalBatchNorm", {"batchnorm", "gap", "fc"}),
    ("ControlFlow", {"dropout", "fc"}),
    ("SyncBN", {"batchnorm", "fc"}),
    ("Lazy", {"batchnorm", "fc"}),
    ("FourD", set()),
])
def test_presence_is_judged_by_what_runs(nets, attr, expected):
    report = check_model(nets(attr), Spec(require=ALL), name=attr)
    assert present(report) == expected


def test_presence_check_does_not_change_the_model(nets):
    model = nets("SyncBN")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    check_model(model, Spec(require=ALL))
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_isinstance_scan_would_miss_what_the_engine_finds(nets):
    # The hand-written test this project replaces: it misses Dropout2d and F.dropout.
    for attr in ("FunctionalDropout", "Dropout2dNet"):
        model = nets(attr)
        assert not any(type(m) is nn.Dropout for m in model.modules())
        assert "dropout" in present(check_model(model, Spec(require=ALL)))


def test_tied_weights_count_once(nets):
    model = nets("TiedWeights")
    assert count_parameters(model) == (623_290, 623_290)
    report = check_model(model, Spec(max_params=623_290))
    assert report.params == 623_290 and report.passed
    assert not check_model(model, Spec(max_params=623_289)).passed


def test_frozen_parameters_count_toward_the_budget(nets):
    report = check_model(nets("Frozen"), Spec(max_params=300))
    assert (report.params, report.trainable_params) == (330, 170)
    assert verdicts(report)["params.max"] is False


def test_lazy_modules_are_materialised_before_counting(nets):
    report = check_model(nets("Lazy"), Spec(exact_params=40_642))
    assert report.params == 40_642 and report.passed


def test_four_d_output_fails_the_output_shape(nets):
    report = check_model(nets("FourD"), Spec())
    check = next(c for c in report.checks if c.id == "output_shape")
    assert not check.passed
    assert check.measured[0] == [1, 10, 26, 26]


def test_output_shape_includes_batch_of_one(nets):
    check = next(c for c in check_model(nets("Dropout2dNet"), Spec()).checks if c.id == "output_shape")
    assert check.passed and check.measured[0] == [1, 10]


def test_num_classes_is_checked(nets):
    assert not check_model(nets("Dropout2dNet"), Spec(num_classes=11)).passed


def test_layer_table_by_module_name(nets):
    model = nets("Dropout2dNet")
    assert layer_output_shapes(model, torch.rand(1, 1, 28, 28))["conv"] == (8, 26, 26)
    good = Spec(layers=(Layer("conv", (8, 26, 26), 80), Layer("pool", (8, 1, 1), 0)))
    assert check_model(model, good).passed
    bad = check_model(model, Spec(layers=(Layer("conv", (8, 24, 24)), Layer("nope", (1,)))))
    assert verdicts(bad) == {"output_shape": True, "layer.conv": False, "layer.nope": False}
    assert "no module named 'nope'" in bad.checks[-1].message


def test_mult_adds_budget(nets):
    model = nets("Dropout2dNet")
    # torchinfo's convention by hand: conv (72+8) weights x 26*26 outputs + linear 8*10+10
    expected = 80 * 26 * 26 + 90
    report = check_model(model, Spec(exact_mult_adds=expected, max_mult_adds=expected))
    assert report.mult_adds == expected and report.passed
    assert not check_model(model, Spec(max_mult_adds=expected - 1)).passed


def test_softmax_output_is_a_warning_unless_the_spec_makes_it_an_error(nets):
    model = nets("SoftmaxOut")
    warned = check_model(model, Spec(), loss="cross_entropy")
    lint = next(c for c in warned.checks if c.id == "lint.double_softmax")
    assert lint.warning and warned.passed and "CrossEntropyLoss" in lint.message
    failed = check_model(model, Spec(lint_errors=frozenset({"double_softmax"})))
    assert not failed.passed


def test_log_softmax_with_nll_is_fine_and_with_cross_entropy_is_not():
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.LogSoftmax(dim=1))
    assert not any(c.id.startswith("lint") for c in check_model(model, Spec(), loss="nll").checks)
    assert any(c.id == "lint.double_softmax" for c in check_model(model, Spec(), loss="cross_entropy").checks)


def test_batchnorm_after_every_conv():
    with_bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    without = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(10))
    spec = Spec(batchnorm_after_every_conv=True)
    assert check_model(with_bn, spec).passed
    assert not check_model(without, spec).passed  # BN after the ReLU, not straight after the conv


def test_model_that_fails_on_the_input_is_a_clear_error(nets):
    with pytest.raises(MnistArchError, match=r"failed on an input of shape \(1, 1, 28, 28\).*RuntimeError"):
        check_model(nets("WrongInput"), Spec())
    assert check_model(nets("WrongInput"), Spec(input_shape=(3, 28, 28), num_classes=4)).checks


@pytest.mark.parametrize("target, message", [
    ("nets.py:NeedsArgs", r"needs arguments \(width\).*def build\(\)"),
    ("nets.py:Missing", r"has no attribute 'Missing'.*FunctionalDropout"),
    ("nets.py:not_a_model", r"returned a int, not an nn.Module"),
    ("broken_import.py:Net", r"does not import: RuntimeError: cannot find weights.pt \(line 3\)"),
    ("syntax_error.py:Net", r"syntax error at line 3"),
    ("absent.py:Net", r"does not exist"),
    ("nets.py", r"no ':ATTR' part"),
])
def test_loader_errors_name_the_file_and_the_problem(user_models, target, message):
    with pytest.raises(MnistArchError, match=message):
        load_model(str(user_models / target))


def test_loader_accepts_builders_instances_and_modules(user_models):
    assert isinstance(load_model(f"{user_models / 'nets.py'}:build_needs_args"), nn.Module)
    assert isinstance(load_model(f"{user_models / 'nets.py'}:instance"), nn.Module)
    assert isinstance(load_model("torch.nn:Identity"), nn.Identity)
    with pytest.raises(MnistArchError, match="cannot be found"):
        load_model("no_such_package.models:Net")


@pytest.mark.parametrize("name", ["bn_dropout_cnn", "micro_cnn", "parallel_cnn", "slim_cnn", "wide_cnn"])
def test_mult_adds_from_calls_equal_torchinfo(name):
    """Our count (from the calls that ran) against torchinfo's, an independent implementation of the
    same convention, where torchinfo can see the model."""
    import torchinfo

    from mnist_arch.registry import create_model
    from mnist_arch.trace import count_mult_adds

    model = create_model(name)
    expected = torchinfo.summary(model, input_size=(1, 1, 28, 28), verbose=0, mode="eval").total_mult_adds
    assert count_mult_adds(model, (1, 28, 28)) == expected


def test_mult_adds_of_functional_layers_count():
    """torchinfo sees no module with weights here and reports 0; the calls show the work."""
    from mnist_arch.trace import count_mult_adds
    from tests.user_models.hostile.nets import Functional

    # conv 8*(9+1) weights and biases x 26*26 outputs; linear 8*10+10
    assert count_mult_adds(Functional(), (1, 28, 28)) == 80 * 26 * 26 + 90
