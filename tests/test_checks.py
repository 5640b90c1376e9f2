"""The engine's layout (issue 26, item 3): each check a small function of `checks.CHECKS`, worded from the
templates of `check_messages`. What each check decides is tested in test_engine, test_head and test_receptive."""

import inspect
import re

from mnist_arch import check_messages, checks, features, head
from mnist_arch.checks import CHECKS, check_model
from mnist_arch.registry import create_model
from mnist_arch.spec import FEATURES, Layer, Spec


def test_every_message_template_is_used_and_every_used_one_exists():
    for tables, modules in [(("MESSAGES", "ERRORS"), (checks, features)), (("WORDS",), (head,))]:
        source = "".join(inspect.getsource(m) for m in modules)
        used = set(re.findall(r'(?:' + "|".join(tables) + r')\["([^"]+)"\]', source))
        declared = set().union(*(getattr(check_messages, "HEAD_MESSAGES" if t == "WORDS" else t) for t in tables))
        assert used == declared, (tables, used ^ declared)


def test_the_report_lists_the_checks_in_the_order_of_CHECKS():
    spec = Spec(exact_params=1, max_params=1, params_below=1, exact_mult_adds=1, max_mult_adds=1,
                min_receptive_field=1, require=frozenset({"dropout", "batchnorm"}),
                require_any=(frozenset(FEATURES),), layers=(Layer("nope", (1,), receptive_field=3),),
                final_activation="logits", batchnorm_after_every_conv=True)
    ids = [c.id for c in check_model(create_model("micro_cnn"), spec, "micro_cnn").checks]
    assert ids == ["params.exact", "params.max", "params.below", "output_shape", "layer.nope", "receptive_field.min",
                   "receptive_field.nope", "require.batchnorm", "require.dropout",
                   "require_any.batchnorm|dropout|fc|gap", "batchnorm_after_every_conv", "final_activation",
                   "mult_adds.exact", "mult_adds.max"]
    rules = [rule.__name__ for rule in CHECKS]
    assert rules.index("layers") < rules.index("receptive_field") < rules.index("require") < rules.index(
        "mult_adds_exact")
