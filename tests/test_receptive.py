"""Receptive fields (mnist_arch.receptive, mnist_arch.field_rules) and the per-layer table (mnist_arch.layer_table).

Figures for the references are worked by hand in docs/receptive_field.md with the recurrence
r_out = r_in + (k - 1) * d * j_in, j_out = j_in * s, start_out = start_in - p * j_in. The property test
measures the field independently: with positive weights, the input pixels whose gradient is nonzero
for one output element are exactly the pixels that reach it.
"""

import json
import pickle

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from mnist_arch.checks import receptive_field_checks
from mnist_arch.fields import Axis
from mnist_arch.layer_rows import to_json, to_markdown, to_table
from mnist_arch.layer_table import layer_table
from mnist_arch.receptive import last_conv_receptive_field, receptive_fields
from mnist_arch.registry import create_model, get_spec

# ---------------------------------------------------------------------------------------------
# The five references, by hand (docs/receptive_field.md): module -> (size, jump, start) per axis,
# "whole" (every output element sees every pixel) or an int (pooled, sees that many pixels per axis).

REFERENCES = {
    "slim_cnn": ("layer2.0", 12, {
        "layer1.0": (3, 1, 0), "layer1": (4, 2, 0), "layer2.0": (12, 2, 0), "layer2": (14, 4, 0),
        "layer3.0": (14, 4, 0), "layer3.1": 26, "layer3": 26}),
    "bn_dropout_cnn": ("conv5.0", 24, {
        "conv1": (3, 1, 0), "conv2.0": (5, 1, 0), "conv2": (6, 2, 0), "conv3": (10, 2, 0),
        "conv4.0": (14, 2, 0), "conv4": (16, 4, 0), "conv5": (24, 4, -4), "fc.1": "whole", "fc": "whole"}),
    "wide_cnn": ("features.11", 24, {
        "features.0": (5, 1, -1), "features.2": (7, 1, -2), "features.4": (8, 2, -2), "features.5": (12, 2, -4),
        "features.7": (16, 2, -6), "features.9": (20, 2, -8), "features.11": (24, 2, -10),
        "features.13": (26, 2, -10), "classifier.1": "whole", "classifier": "whole"}),
    "micro_cnn": ("block3.3", 28, {
        "block1.0": (3, 1, 0), "block1.3": (5, 1, 0), "block1": (6, 2, 0), "block2.0": (10, 2, 0),
        "block2.3": (14, 2, 0), "block2": (16, 4, 0), "block3.0": (24, 4, 0), "block3.3": (28, 4, 0),
        "head": "whole"}),
    "parallel_cnn": ("conv3_2", 26, {
        "conv1": (3, 1, -1), "conv2_1": (8, 2, -3), "conv2_2": (8, 2, -3), "conv3_1": (18, 4, -7),
        "conv3_2": (26, 4, -11), "fc1": "whole", "output_layer": "whole"}),
}


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_fields_match_the_hand_worked_ones(name):
    model, shape = create_model(name), get_spec(name).input_shape
    last, last_size, expected = REFERENCES[name]
    fields = receptive_fields(model, shape)
    for module, want in expected.items():
        rf = fields[module]
        assert not rf.unknown and rf.dense, (module, rf)
        if want == "whole":
            assert rf.whole and rf.pooled, (module, rf)
        elif isinstance(want, int):
            assert rf.pooled and not rf.whole and rf.seen() == (want, want), (module, rf)
            assert str(rf) == f"{want}x{want} of 28x28"
        else:
            assert rf.axes == (Axis(*want),) * 2, (module, rf)
    assert fields[""].whole == (name != "slim_cnn")  # slim_cnn's strided pools drop the last 2 rows and columns
    label, rf = last_conv_receptive_field(model, shape)
    assert (label, rf.size) == (last, (last_size, last_size))


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_layer_table(name):
    spec = get_spec(name)
    rows = layer_table(create_model(name), spec.input_shape, name)
    by_name = {r.name: r for r in rows}
    assert rows[0].name == "" and rows[0].mult_adds == spec.exact_mult_adds  # torchinfo's total, as declared
    assert rows[0].params == spec.exact_params
    for layer in spec.layers:
        assert by_name[layer.name].output_shape == layer.output_shape
        if layer.params is not None:
            assert by_name[layer.name].params == layer.params
    markdown = to_markdown(rows, name)
    assert markdown.count("\n| ") == len(rows) + 2  # header, separator, one line per module
    last, size, _ = REFERENCES[name]
    assert f"| `{last}` |" in markdown and f"{size}x{size}" in markdown
    data = json.loads(to_json(rows, name))
    assert [r["name"] for r in data["layers"]] == [r.name for r in rows]
    assert len(to_table(rows).splitlines()) == len(rows) + 2


def test_results_are_plain_picklable_data():
    fields = receptive_fields(create_model("micro_cnn"))
    assert pickle.loads(pickle.dumps(fields)) == fields
    rows = layer_table(create_model("slim_cnn"))
    assert pickle.loads(pickle.dumps(rows)) == rows


# ---------------------------------------------------------------------------------------------
# Small models, by hand


class Seq(nn.Module):
    """Runs `fn(self, x)`: small functional models without a class each."""

    def __init__(self, fn, **modules):
        super().__init__()
        self.fn = fn
        for k, m in modules.items():
            self.add_module(k, m)

    def forward(self, x):
        return self.fn(self, x)


def field(fn, shape=(1, 28, 28), **modules):
    return receptive_fields(Seq(fn, **modules), shape)[""]


def test_strided_convs():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Conv2d(2, 2, 3, stride=2), nn.Conv2d(2, 2, 1))
    fields = receptive_fields(model)
    assert fields["0"].axes == (Axis(3, 2, 0),) * 2
    assert fields["1"].axes == (Axis(7, 4, 0),) * 2  # 3 + (3 - 1) x 2
    assert fields["2"].axes == (Axis(7, 4, 0),) * 2


def test_dilated_convs_may_leave_gaps():
    model = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 3, dilation=2, padding=2))
    fields = receptive_fields(model)
    assert fields["0"].axes == (Axis(5, 1, 0),) * 2 and not fields["0"].dense  # sees pixels 0, 2 and 4
    assert fields["1"].axes == (Axis(9, 1, -2),) * 2
    assert str(fields["1"]) == "9x9, gaps possible"


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_non_square_kernels_and_padding_same():
    rf = field(lambda m, x: m.c(x), c=nn.Conv2d(1, 1, (3, 5), padding="same", dilation=(1, 2)))
    assert rf.axes == (Axis(3, 1, -1), Axis(9, 1, -4))
    rf = field(lambda m, x: m.c(x), c=nn.Conv2d(1, 1, 4, padding="same"))  # the odd pixel goes right
    assert rf.axes == (Axis(4, 1, -1),) * 2


def test_residual_block():
    def forward(m, x):
        x = F.relu(m.stem(x))  # 3, start -1
        y = m.b(F.relu(m.a(x)))  # 3 + 2 + 2 = 7, start -3
        x = F.relu(x + y)
        return m.down_main(x) + m.down_skip(x)  # a strided block with a 1x1 strided shortcut

    rf = field(forward, stem=nn.Conv2d(1, 4, 3, padding=1), a=nn.Conv2d(4, 4, 3, padding=1),
               b=nn.Conv2d(4, 4, 3, padding=1), down_main=nn.Conv2d(4, 4, 3, stride=2, padding=1),
               down_skip=nn.Conv2d(4, 4, 1, stride=2))
    assert rf.axes == (Axis(9, 2, -4),) * 2 and rf.dense  # the main path holds the shortcut's window


def test_parallel_branches_joined_by_cat():
    def forward(m, x):
        x = F.max_pool2d(F.relu(m.stem(x)), 2)  # 4, jump 2, start -1
        return torch.cat([F.relu(m.a(x)), F.relu(m.b(x))], dim=1)  # 3x3 and 5x5 branches, 'same'

    rf = field(forward, stem=nn.Conv2d(1, 8, 3, padding=1), a=nn.Conv2d(8, 4, 3, padding=1),
               b=nn.Conv2d(8, 4, 5, padding=2))
    assert rf.axes == (Axis(4 + 4 * 2, 2, -1 - 2 * 2),) * 2 and rf.dense  # the larger branch holds the other


def test_branches_that_do_not_nest_give_their_span():
    def forward(m, x):
        a = m.a(F.pad(x, (0, 1, 0, 1)))  # position o sees o..o+1
        b = m.b(F.pad(x, (1, 0, 1, 0)))  # position o sees o-1..o
        return torch.cat([a, b], 1)

    rf = field(forward, a=nn.Conv2d(1, 1, 2), b=nn.Conv2d(1, 1, 2))
    assert rf.axes == (Axis(3, 1, -1),) * 2 and not rf.dense  # the corners of the 3x3 span are not seen


def test_branches_with_different_jumps_are_unknown():
    def forward(m, x):
        return torch.cat([m.strided(x), m.wide(x)], 1)  # both 15x15: o sees 2o-1..2o against o..o+13

    rf = field(forward, strided=nn.Conv2d(1, 1, 2, stride=2, padding=1), wide=nn.Conv2d(1, 1, 14))
    assert rf.unknown == "branches with jumps 2 and 1 joined" and str(rf).startswith("unknown (")


def test_functional_pooling():
    def forward(m, x):
        x = m.c(x)  # 3
        x = F.max_pool2d(x, 3, 2, padding=1, ceil_mode=True)  # 3 + 2 = 5, jump 2, start -1
        x = F.avg_pool2d(x, kernel_size=2)  # 5 + 2 = 7, jump 4
        return F.lp_pool2d(x, 2, 2)  # 7 + 4 = 11, jump 8

    rf = field(forward, c=nn.Conv2d(1, 1, 3))
    assert rf.axes == (Axis(11, 8, -1),) * 2


def test_adaptive_pooling():
    conv = {"c": nn.Conv2d(1, 1, 3)}  # 26x26 positions, 3x3 each
    assert field(lambda m, x: F.adaptive_avg_pool2d(m.c(x), 13), **conv).axes == (Axis(4, 2, 0),) * 2
    whole = field(lambda m, x: F.adaptive_max_pool2d(m.c(x), 1), **conv)
    assert whole.whole and whole.size == (28, 28) and str(whole) == "28x28 (whole input)"
    rf = field(lambda m, x: F.adaptive_avg_pool2d(m.c(x), 5), **conv)
    assert rf.unknown == "adaptive_avg_pool2d from 26x26 to 5x5, not a whole multiple"


def test_global_mean_and_linear_see_the_whole_input():
    assert field(lambda m, x: m.c(x).mean((2, 3)), c=nn.Conv2d(1, 4, 3)).whole
    assert field(lambda m, x: m.fc(m.c(x).flatten(1)), c=nn.Conv2d(1, 1, 3), fc=nn.Linear(26 * 26, 10)).whole


def test_a_stride_that_drops_pixels_is_not_the_whole_input():
    rf = field(lambda m, x: m.fc(m.c(x).flatten(1)), (1, 27, 27), c=nn.Conv2d(1, 1, 2, stride=2),
               fc=nn.Linear(13 * 13, 10))
    assert not rf.whole and rf.seen() == (26, 26) and str(rf) == "26x26 of 27x27"


def test_reshapes_and_permutes_keep_positions():
    def forward(m, x):
        x = m.a(x)  # 3
        n, c, h, w = x.shape
        x = x.view(n, -1).view(n, c, h, w)  # flattened and back
        x = m.mix(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)  # a linear layer per position (channels last)
        x = x.flatten(2).transpose(1, 2).transpose(1, 2).unflatten(2, (h, w))
        return m.b(x[:, :2, 1:, :])  # a channel slice, a crop of the first row

    rf = field(forward, a=nn.Conv2d(1, 4, 3), mix=nn.Linear(4, 4), b=nn.Conv2d(2, 2, 3))
    assert rf.axes == (Axis(5, 1, 1), Axis(5, 1, 0))


def test_a_squeeze_excitation_gate_lets_every_position_see_the_whole_input():
    def forward(m, x):
        x = m.c(x)  # 3x3
        gate = torch.sigmoid(m.fc(x.mean((2, 3)))).view(x.shape[0], -1, 1, 1)
        return m.after(x * gate)

    rf = field(forward, c=nn.Conv2d(1, 4, 3), fc=nn.Linear(4, 4), after=nn.Conv2d(4, 4, 3))
    assert rf.whole and rf.pooled and str(rf) == "whole input"  # every position, through the gate


def test_patch_tokens_linear_per_token_and_attention():
    def tokens(m, x):
        return m.embed(m.patch(x).flatten(2).transpose(1, 2))  # (N, 16, C): 7x7 patches, a linear per token

    assert field(tokens, patch=nn.Conv2d(1, 8, 7, stride=7), embed=nn.Linear(8, 8)).axes == (Axis(7, 7, 0),) * 2
    assert field(lambda m, x: tokens(m, x).mean(1), patch=nn.Conv2d(1, 8, 7, stride=7), embed=nn.Linear(8, 8)).whole
    rf = field(lambda m, x: (lambda t: t @ t.transpose(1, 2))(tokens(m, x)), patch=nn.Conv2d(1, 8, 7, stride=7),
               embed=nn.Linear(8, 8))
    assert rf.unknown == "matmul of two tensors that both carry positions"


def test_an_unknown_call_is_reported_not_guessed():
    def forward(m, x):
        return m.b(F.relu(m.up(m.a(x))))

    fields = receptive_fields(Seq(forward, a=nn.Conv2d(1, 1, 3), up=nn.Upsample(scale_factor=2),
                                  b=nn.Conv2d(1, 1, 3)))
    assert fields["a"].axes == (Axis(3, 1, 0),) * 2
    assert fields["up"].unknown == "interpolate" and fields["b"].unknown == "interpolate"
    assert str(fields[""]) == "unknown (interpolate)"


def test_modules_that_do_not_run_have_no_field():
    model = nn.ModuleDict({"used": nn.Conv2d(1, 1, 3), "spare": nn.Conv2d(1, 1, 3)})
    fields = receptive_fields(Seq(lambda m, x: m.net["used"](x), net=model))
    assert fields["net.used"].size == (3, 3) and fields["net.spare"] is None


# ---------------------------------------------------------------------------------------------
# Spec checks


def test_min_receptive_field_check_names_the_layer_the_figure_and_the_limit():
    [(check_id, passed, measured, expected, message)] = receptive_field_checks(create_model("slim_cnn"),
                                                                                (1, 28, 28), 28)
    assert (check_id, passed, measured, expected) == ("receptive_field.min", False, 12, 28)
    assert message == "the last conv (layer2.0) sees 12x12 input pixels (jump 2), declared at least 28 (16 short)"
    [(_, passed, measured, _, message)] = receptive_field_checks(create_model("micro_cnn"), (1, 28, 28), 28)
    assert passed and measured == 28 and message.startswith("the last conv (block3.3) sees 28x28")


def test_layer_receptive_field_checks():
    checks = receptive_field_checks(create_model("micro_cnn"), (1, 28, 28), None,
                                    {"block1": 6, "block2": 15, "head": "whole", "block2.0": "whole", "nope": 3})
    got = {c[0]: (c[1], c[2], c[4]) for c in checks}
    assert got["receptive_field.block1"] == (True, 6, "block1 sees 6x6, declared 6 per axis")
    assert got["receptive_field.block2"] == (False, 16, "block2 sees 16x16, declared 15 per axis")
    assert got["receptive_field.head"] == (True, "whole", "head sees whole input, declared the whole input")
    assert got["receptive_field.block2.0"][0] is False
    assert got["receptive_field.nope"][0] is False and "no module named 'nope'" in got["receptive_field.nope"][2]
    assert receptive_field_checks(create_model("micro_cnn"), (1, 28, 28)) == []


def test_min_receptive_field_without_any_conv():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    [(_, passed, _, _, message)] = receptive_field_checks(mlp, (1, 28, 28), 5)
    assert not passed and message.startswith("no convolution ran")


def test_unknown_last_conv_fails_the_minimum():
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.Upsample(scale_factor=2), nn.Conv2d(1, 1, 3))
    [(_, passed, measured, _, message)] = receptive_field_checks(model, (1, 28, 28), 5)
    assert not passed and measured == "unknown"
    assert message == "the last conv (2) has an unknown receptive field (interpolate), declared at least 5"


# ---------------------------------------------------------------------------------------------
# The independent measurement: autograd on random stacks


class Stack(nn.Module):
    """Convs with all-ones weights, pools, residual adds and concatenated branches, as drawn."""

    def __init__(self, layers, pool):
        super().__init__()
        self.layers, self.pool = layers, pool

    def conv(self, x, k, stride=1, padding=0, dilation=1):
        w = torch.ones(1, x.shape[1], k, k, dtype=x.dtype)
        return F.relu(F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation))

    def forward(self, x):
        for kind, *a in self.layers:
            if kind == "conv":
                x = self.conv(x, *a)
            elif kind == "pool":
                k, s, p, ceil = a
                pool = F.max_pool2d if self.pool == "max" else F.avg_pool2d
                x = pool(x, kernel_size=k, stride=s, padding=p, ceil_mode=ceil)
            elif kind == "res":
                k, d = a
                x = x + self.conv(x, k, padding=d * (k - 1) // 2, dilation=d)
            elif kind == "cat":
                (k1, d1), (k2, d2), s = a
                x = torch.cat([self.conv(x, k1, s, d1 * (k1 - 1) // 2, d1),
                               self.conv(x, k2, s, d2 * (k2 - 1) // 2, d2)], dim=1)
            else:  # "shift": two 2x2 branches offset by one pixel
                x = torch.cat([self.conv(F.pad(x, (0, 1, 0, 1)), 2), self.conv(F.pad(x, (1, 0, 1, 0)), 2)], 1)
        return x


def _out(n, k, s=1, p=0, d=1, ceil=False):
    span = n + 2 * p - d * (k - 1) - 1
    if span < 0:
        return 0
    out = (-(-span // s) if ceil else span // s) + 1
    return out - 1 if ceil and (out - 1) * s >= n + p else out


@st.composite
def stacks(draw):
    size = draw(st.integers(10, 36))
    n, layers = size, []
    odd = st.sampled_from([1, 3, 5])
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "pool", "res", "cat", "shift"]))
        if kind == "conv":
            k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
            layer = ("conv", k, s, draw(st.integers(0, d * (k - 1) // 2)), d)
            m = _out(n, k, s, layer[3], d)
        elif kind == "pool":
            k, s = draw(st.integers(1, 3)), draw(st.integers(1, 3))
            layer = ("pool", k, s, draw(st.integers(0, k // 2)), draw(st.booleans()))
            m = _out(n, k, s, layer[3], 1, layer[4])
        elif kind == "res":
            layer, m = ("res", draw(odd), draw(st.integers(1, 2))), n
        elif kind == "cat":
            s = draw(st.integers(1, 2))
            layer = ("cat", (draw(odd), draw(st.integers(1, 2))), (draw(odd), draw(st.integers(1, 2))), s)
            m = _out(n, 1, s)
        else:
            layer, m = ("shift",), n
        if m < 1:
            break
        layers.append(layer)
        n = m
    return size, layers


@settings(max_examples=60, deadline=None)
@given(stacks())
def test_autograd_sees_exactly_the_computed_field(stack):
    size, layers = stack
    rf = receptive_fields(Stack(layers, "avg"), (1, size, size))[""]
    assert rf == receptive_fields(Stack(layers, "max"), (1, size, size))[""]  # pools: same geometry
    assert not rf.unknown, rf
    x = torch.ones(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    y = Stack(layers, "avg")(x)  # max pool routes the gradient to one pixel; avg pool to all it reads
    last = y.shape[-1] - 1
    for oy, ox in {(0, 0), (last // 2, last // 2), (last, last), (0, last)}:
        (grad,) = torch.autograd.grad(y[0, :, oy, ox].sum(), x, retain_graph=True)
        seen = grad[0, 0] != 0
        (y0, y1), (x0, x1) = rf.axes[0].window(oy), rf.axes[1].window(ox)
        rows, cols = seen.nonzero(as_tuple=True)
        outside = seen.clone()
        outside[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = False
        assert not outside.any(), f"pixels outside the window {y0}..{y1} x {x0}..{x1} reach ({oy}, {ox})"
        if y0 >= 0 and x0 >= 0 and y1 < size and x1 < size:  # the window lies inside the image
            assert (rows.min(), rows.max(), cols.min(), cols.max()) == (y0, y1, x0, x1)
            if rf.dense:
                assert seen[y0:y1 + 1, x0:x1 + 1].all()
