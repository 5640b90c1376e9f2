"""Every declared fact of every registered architecture, proven against the built model.

Expected values come from the specs, which transcribe the reference READMEs; the measurements come
from the model. One generic test per fact, parametrized over the registry (torchvision's pattern).
"""

import dataclasses

import pytest
import torch

from mnist_arch import create_model, get_spec, list_models
from mnist_arch.checks import check_model
from mnist_arch.errors import MnistArchError

NAMES = list_models()

# The reference READMEs' counts, written out here once more so that an edit to a spec that
# silently changed a declared figure fails a test.
README_COUNTS = {"slim_cnn": 9_956, "bn_dropout_cnn": 19_576, "wide_cnn": 11_705_450, "micro_cnn": 9_594}


def test_the_five_references_are_registered():
    assert NAMES == ["bn_dropout_cnn", "micro_cnn", "parallel_cnn", "slim_cnn", "wide_cnn"]
    assert list_models("*_cnn") == NAMES
    assert list_models("m*") == ["micro_cnn"]
    assert list_models("resnet*") == []


def test_unknown_name_is_a_clear_error():
    with pytest.raises(MnistArchError, match="No registered model is named 'lenet'.*micro_cnn"):
        create_model("lenet")


@pytest.mark.parametrize("name", README_COUNTS)
def test_declared_counts_match_the_readmes(name):
    assert get_spec(name).exact_params == README_COUNTS[name]


@pytest.mark.parametrize("name", NAMES)
def test_every_declared_fact_holds(name):
    spec = get_spec(name)
    report = check_model(create_model(name), spec, name=name)
    failed = [c.message for c in report.checks if not c.passed]
    assert not failed, failed
    ids = {c.id for c in report.checks}
    # every declared fact produced a check (none silently skipped)
    assert {"params.exact", "params.max", "output_shape", "mult_adds.exact", "final_activation"} <= ids
    assert {f"require.{f}" for f in spec.require} <= ids
    assert {f"layer.{layer.name}" for layer in spec.layers} <= ids


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_independently(name):
    model = create_model(name)
    assert sum(p.numel() for p in model.parameters()) == get_spec(name).exact_params


@pytest.mark.parametrize("name", NAMES)
def test_layer_rows_with_parameters_add_up(name):
    # The rows that declare parameters for leaf layers must not exceed the total.
    spec = get_spec(name)
    modules = dict(create_model(name).named_modules())
    leaf = [row.params for row in spec.layers
            if row.params is not None and not list(modules[row.name].children())]
    assert sum(leaf) <= spec.exact_params


def test_a_broken_fact_fails():
    # The engine can fail a reference: a spec that declares one parameter fewer must not pass.
    spec = get_spec("micro_cnn")
    report = check_model(create_model("micro_cnn"), dataclasses.replace(spec, exact_params=spec.exact_params - 1))
    assert not report.passed


@pytest.mark.parametrize("name", NAMES)
def test_builder_kwargs(name):
    model = create_model(name, num_classes=7).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 1, 28, 28)).shape == (2, 7)
