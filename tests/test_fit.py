"""Issue 19: recipes fit the machine they run on. A bf16 recipe trains in bf16 only where the device computes
bf16 natively, else in fp32 with its `fp32_changes` (`mnist_arch.train.fit_recipe`, the one home of that rule);
an optimizer is fused only where torch has the fused kernel (`mnist_arch.train.fused_kernel`); a failure of our
own set-up is reported as ours, naming the recipe field, never as the model's code."""

import dataclasses
import json
import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from mnist_arch import create_model, get_spec, list_models, train
from mnist_arch.cli import main
from mnist_arch.data import MNIST, load_mnist
from mnist_arch.errors import MnistArchError
from mnist_arch.spec import RECIPE_CHOICES, Recipe
from mnist_arch.train import RunOptions, fit_recipe, make_optimizer, optimizer_kernel, train_model

#: The stand-in for a CPU without native bf16 (docs/training.md, "A CPU without native bf16"): oneDNN capped at
#: AVX2, which also makes torch.ops.mkldnn._is_mkldnn_bf16_supported() answer False, and ATen's kernels capped at
#: AVX2 too. Read when torch loads, so only a fresh process can take it.
NO_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}

BF16 = Recipe(epochs=1, batch_size=64, optimizer="adam", lr=1e-3, min_accuracy=0.9, train_subset=1024,
              precision="bf16_weights", channels_last=True, threshold_note="bf16 seeds",
              fp32_changes={"train_subset": 512, "min_accuracy": 0.8, "threshold_note": "fp32 seeds"})


@pytest.fixture(scope="module")
def small(mnist_root):
    data = load_mnist(mnist_root)
    return MNIST(data.train_images[:1024], data.train_labels[:1024], data.test_images[:500], data.test_labels[:500])


@pytest.fixture
def fresh_kernels():
    """fused_kernel answers once per process: each test that changes what torch has asks anew."""
    train.fused_kernel.cache_clear()
    yield
    train.fused_kernel.cache_clear()


def _in_a_fresh_process(script: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="the stand-in caps x86 ISAs")
def test_without_native_bf16_every_quick_recipe_trains_in_fp32():
    """Under the stand-in, oneDNN says no native bf16, and every quick recipe trains in fp32 with its fp32
    threshold; bench leaves bf16 out of its default paths and its peak."""
    out = _in_a_fresh_process("""
        import json, torch
        from mnist_arch import bench_prepare, get_spec, list_models
        from mnist_arch.machine import native_bf16
        from mnist_arch.train import fit_recipe
        fitted = {n: fit_recipe(get_spec(n).recipes["quick"]) for n in list_models()}
        print(json.dumps({"onednn": torch.ops.mkldnn._is_mkldnn_bf16_supported(), "native": native_bf16("cpu"),
                          "capability": torch.backends.cpu.get_cpu_capability(),
                          "paths": bench_prepare.default_paths("cpu"),
                          "fitted": {n: [r.precision, r.min_accuracy, r.train_subset, s]
                                     for n, (r, s) in fitted.items()}}))
    """, NO_BF16)
    assert out["onednn"] is False and out["native"] is False and out["capability"] == "AVX2"
    assert "bf16" not in out["paths"] and "channels_last" in out["paths"]
    for name, (precision, threshold, subset, setting) in out["fitted"].items():
        declared = get_spec(name).recipes["quick"]
        assert precision == "fp32", name
        assert [threshold, subset] == [declared.in_fp32().min_accuracy, declared.in_fp32().train_subset], name
        if declared.precision != "fp32":
            assert setting == (f"fp32, not the declared {declared.precision}: this CPU (AVX2) has no native bf16"
                               + (" (the recipe's fp32_changes apply)" if declared.fp32_changes else "")), name


def test_with_native_bf16_the_declared_precision_is_kept(monkeypatch):
    monkeypatch.setattr(train, "native_bf16", lambda device: True)
    for name in list_models():
        declared = get_spec(name).recipes["quick"]
        fitted, setting = fit_recipe(declared)
        assert fitted == declared, name
        assert setting == ("fp32" if declared.precision == "fp32" else
                           f"{declared.precision} (this CPU ({torch.backends.cpu.get_cpu_capability()}) computes bf16 "
                           "natively)"), name


@pytest.mark.parametrize("onednn, flags, native", [
    (True, {"avx512_bf16": True}, True), (True, {"amx_bf16": True}, True), (True, {"avx_ne_convert": True}, True),
    (True, {"avx512f": True, "avx512bw": True}, False),  # an AVX-512 CPU without bf16 (Skylake to Ice Lake)
    (False, {"avx512_bf16": True}, False),  # oneDNN capped (the stand-in) or unable
])
def test_a_cpu_computes_bf16_natively_where_onednn_and_its_flags_both_say_so(monkeypatch, onednn, flags, native):
    """Some oneDNN builds answer yes for any AVX-512 CPU and emulate bf16 there: the CPU's own flags must say so
    too. oneDNN's answer alone stays decisive for no, so that ONEDNN_MAX_CPU_ISA makes the stand-in."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags)
    assert train.native_bf16("cpu") is native
    assert fit_recipe(get_spec("wide_cnn").recipes["quick"])[0].precision == ("bf16_weights" if native else "fp32")


def test_fp32_changes_apply_only_where_bf16_is_not_native(monkeypatch):
    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    fitted, setting = fit_recipe(BF16)
    assert (fitted.precision, fitted.train_subset, fitted.min_accuracy, fitted.threshold_note) == (
        "fp32", 512, 0.8, "fp32 seeds")
    assert fitted.fp32_changes == {} and fitted.channels_last and fitted.optimizer == "adam"
    assert setting.startswith("fp32, not the declared bf16_weights: this CPU (")
    assert setting.endswith(") has no native bf16 (the recipe's fp32_changes apply)")
    plain = dataclasses.replace(BF16, precision="fp32")
    assert fit_recipe(plain) == (plain, "fp32")  # an fp32 recipe is never changed, fp32_changes or not


@pytest.mark.parametrize("capability, name, precision", [((9, 0), "NVIDIA H200", "bf16_weights"),
                                                          ((7, 5), "Tesla T4", "fp32")])
def test_cuda_computes_bf16_natively_from_compute_capability_8(monkeypatch, capability, name, precision):
    """Ampere (8.0) and newer compute bf16; a T4 (7.5) emulates it, though torch.cuda.is_bf16_supported() says
    yes there by default. The device asked about is the one given. No GPU needed: CUDA's answers are stood in."""
    asked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: asked.append(device) or capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    fitted, setting = fit_recipe(BF16, "cuda:1")
    assert asked == [torch.device("cuda:1")] and fitted.precision == precision
    assert setting == (f"bf16_weights (this GPU ({name}) computes bf16 natively)" if precision != "fp32" else
                       f"fp32, not the declared bf16_weights: this GPU ({name}) has no native bf16 (the recipe's "
                       "fp32_changes apply)")


def test_every_bf16_quick_recipe_has_fp32_seeds_behind_its_fp32_threshold():
    for name in list_models():
        quick = get_spec(name).recipes["quick"]
        if quick.precision == "fp32":
            assert not quick.fp32_changes, name
            continue
        fp32 = quick.in_fp32()
        assert "fp32" in fp32.threshold_note and fp32.threshold_note != quick.threshold_note, name
        assert set(quick.fp32_changes) <= {"train_subset", "batch_size", "lr", "schedule_kwargs", "min_accuracy",
                                           "threshold_note"}, name


def test_a_run_says_what_it_ran_at(small, monkeypatch):
    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    torch.manual_seed(0)
    result = train_model(create_model("micro_cnn"), BF16, small,
                         RunOptions(name="micro_cnn", recipe_name="quick", threads=1))
    assert (result.device, result.precision, result.min_accuracy) == ("cpu", "fp32", 0.8)
    assert result.setting.startswith("fp32, not the declared bf16_weights")
    assert result.passed == (result.test_accuracy >= 0.8 and result.collapsed is None)
    data = result.to_dict()
    assert {k: data[k] for k in ("device", "precision", "min_accuracy", "passed")} == {
        "device": "cpu", "precision": "fp32", "min_accuracy": 0.8, "passed": result.passed}
    assert "on cpu, fp32, not the declared bf16_weights" in result.verdict() and "threshold 80.00%" in result.verdict()


# ---------------------------------------------------------------------------------------------
# Fused optimizers only where torch has the kernel


def _one_step(optimizer: torch.optim.Optimizer) -> None:
    for group in optimizer.param_groups:
        for p in group["params"]:
            p.grad = torch.ones_like(p)
    optimizer.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_every_optimizer_is_fused_on_the_cpu_where_this_torch_has_the_kernel(fresh_kernels, dtype):
    """torch 2.4 and newer have every recipe optimizer's fused CPU kernel (CI pins 2.14): each is made fused,
    and its step runs."""
    assert set(train.OPTIMIZERS) == set(RECIPE_CHOICES["optimizer"]) == set(train.FUSED_OPS)
    for optimizer in RECIPE_CHOICES["optimizer"]:
        model = create_model("micro_cnn").to(dtype)
        made = make_optimizer(model, dataclasses.replace(BF16, optimizer=optimizer))
        assert made.defaults["fused"] is True and not made.defaults.get("foreach"), optimizer
        _one_step(made)


def test_an_optimizer_whose_fused_kernel_torch_lacks_gets_foreach(fresh_kernels, monkeypatch, small):
    """As torch before 2.4 on the CPU: no fused operator registered. The optimizer is foreach and trains."""
    monkeypatch.setitem(train.FUSED_OPS, "adagrad", "_fused_adagrad_missing_")
    made = make_optimizer(create_model("micro_cnn"), dataclasses.replace(BF16, optimizer="adagrad"))
    assert made.defaults["foreach"] is True and not made.defaults.get("fused")
    _one_step(made)
    recipe = dataclasses.replace(BF16, optimizer="adagrad", lr=0.05, precision="fp32")
    result = train_model(create_model("micro_cnn"), recipe, small, RunOptions(threads=1))
    assert result.test_accuracy > 0.3


def test_an_optimizer_whose_step_refuses_the_device_gets_foreach(fresh_kernels, monkeypatch):
    """As torch 2.11's Adagrad on CUDA: the kernel is registered and the constructor takes fused=True, but
    the first step() refuses the device. The rule's scratch step meets the refusal, so the model's never does."""
    class RefusingAdagrad(torch.optim.Adagrad):
        def step(self, closure=None):
            if self.defaults.get("fused"):
                raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of supported "
                                   "devices: ['mps', 'xpu', 'hpu', 'cpu'] but torch.float32 and cpu")
            return super().step(closure)

    monkeypatch.setitem(train.OPTIMIZERS, "adagrad", RefusingAdagrad)
    made = make_optimizer(create_model("micro_cnn"), dataclasses.replace(BF16, optimizer="adagrad"))
    assert isinstance(made, RefusingAdagrad) and made.defaults["foreach"] is True and not made.defaults.get("fused")
    _one_step(made)


def test_cuda_goes_through_the_same_rule_without_a_gpu(fresh_kernels, monkeypatch):
    """For CUDA the rule asks torch's dispatcher, which a CUDA build of torch answers on a machine without a
    GPU (a CPU-only build registers no CUDA kernel: foreach); where the GPU is there, the scratch step too."""
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the scratch step runs on it, which the tests above cover on the CPU")
    for optimizer, op in train.FUSED_OPS.items():
        registered = torch._C._dispatch_has_kernel_for_dispatch_key(f"aten::{op}", "CUDA")
        assert optimizer_kernel(optimizer, [("cuda", torch.float32)]) == ("fused" if registered else "foreach")
    monkeypatch.setitem(train.FUSED_OPS, "adagrad", "_fused_adagrad_missing_")  # torch without the kernel
    train.fused_kernel.cache_clear()
    assert optimizer_kernel("adagrad", [("cuda", torch.float32)]) == "foreach"
    assert optimizer_kernel("adam", [("cuda", torch.float32), ("cuda", torch.int64)]) == "foreach"  # not all float


def test_a_recipes_own_choice_is_left_as_it_is():
    made = make_optimizer(create_model("micro_cnn"), dataclasses.replace(BF16, optimizer_kwargs={"foreach": False}))
    assert made.defaults["foreach"] is False and not made.defaults.get("fused")


# ---------------------------------------------------------------------------------------------
# Our set-up's errors are ours


@pytest.mark.parametrize("changes, field, raised", [
    ({"optimizer_kwargs": {"momentum": 0.9}}, "optimizer ('adam' with {'momentum': 0.9})", "TypeError"),
    ({"optimizer_kwargs": {"foreach": True, "differentiable": True}},
     "optimizer ('adam' with {'foreach': True, 'differentiable': True})", "AssertionError"),  # at the first step
    ({"schedule": "onecycle", "schedule_kwargs": {"max_lr": 0.1, "pct_start": 2.0}},
     "schedule ('onecycle' with {'max_lr': 0.1, 'pct_start': 2.0})", "ValueError"),
])
def test_a_failing_set_up_names_the_recipe_field(small, changes, field, raised):
    recipe = dataclasses.replace(BF16, precision="fp32", **changes)
    with pytest.raises(MnistArchError) as info:
        train_model(create_model("micro_cnn"), recipe, small, RunOptions(threads=1))
    message = str(info.value)
    assert message.startswith(f"mnist-arch's own set-up failed, not the model's code: the recipe's {field} "
                              f"raised {raised}: "), message
    assert "Check that field of the recipe" in message and "\n" not in message


def test_a_failing_optimizer_step_is_ours(small, monkeypatch, fresh_kernels):
    """The optimizer's step() is ours too (where torch 2.11's fused Adagrad failed on CUDA)."""
    class BrokenStep(torch.optim.SGD):
        def step(self, closure=None):
            raise RuntimeError("the kernel is not there\nsecond line")

    monkeypatch.setitem(train.OPTIMIZERS, "sgd", BrokenStep)
    recipe = dataclasses.replace(BF16, optimizer="sgd", precision="fp32")
    with pytest.raises(MnistArchError, match=r"^mnist-arch's own set-up failed, not the model's code: the "
                                             r"recipe's optimizer \('sgd' with \{\}\) raised RuntimeError: the kernel "
                                             r"is not there\. Check"):
        train_model(create_model("micro_cnn"), recipe, small, RunOptions(threads=1))


PROJECT = """\
[tool.mnist-arch.models.net]
model = "net.py:Net"
[tool.mnist-arch.models.net.train]
min_accuracy = 0.5
optimizer_kwargs = { betas = 0.9 }  # Adam takes two betas: its constructor raises TypeError
"""

NET = """\
import torch.nn as nn

class Net(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Flatten(), nn.Linear(784, 10))
"""


@pytest.fixture
def refusing_project(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(PROJECT)
    (tmp_path / "net.py").write_text(NET)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_reports_our_failure_as_ours(refusing_project, mnist_root, capsys):
    code = main(["train", "net", "--device", "cpu", "--data-dir", str(mnist_root)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the recipe's optimizer ('adam' with {'betas': 0.9}) raised TypeError: " in err
    assert "the model's code" not in err.replace("not the model's code", "") and "Traceback" not in err


def test_the_plugins_training_item_reports_our_failure_as_ours(refusing_project, mnist_root):
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "no:benchmark", "-m",
                           "training", f"--mnist-arch-data={mnist_root}"], cwd=refusing_project, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert "mnist-arch's own set-up failed, not the model's code: the recipe's optimizer" in proc.stdout
    assert "Traceback" not in proc.stdout


def test_bench_reports_the_row_that_cannot_run_and_prints_the_others(refusing_project, capsys):
    code = main(["bench", "--batch-sizes", "1,2", "--paths", "eager", "--min-time", "0.01", "--train"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    assert captured.out.count("net             forward eager") == 2  # both forward rows are measured
    assert "net             train   train" in captured.out and "error: mnist-arch's own set-up failed" \
        in captured.out
    assert "mnist-arch bench: Model net: the training step failed: mnist-arch's own set-up failed, not " \
           "the model's code: the recipe's optimizer ('adam' with {'betas': 0.9}) raised TypeError" \
           in captured.err


def test_the_markdown_table_of_seeds_says_what_they_ran_at_and_which_side_of_the_worst_seed(small, monkeypatch):
    from mnist_arch.runs import runs_table

    monkeypatch.setattr(train, "native_bf16", lambda device: False)
    results = [train_model(create_model("micro_cnn"), BF16, small,
                           RunOptions(name="micro_cnn", recipe_name="quick", seed=s, threads=1)) for s in (0, 1)]
    table = runs_table(results, [0, 1], BF16)
    assert "| seed | test accuracy | epochs | seconds | device | precision | threads | collapsed |" in table
    assert "| 0 | " in table and " | cpu | fp32 | 1 | " in table
    worst = min(r.test_accuracy for r in results)
    side = "below" if worst >= 0.8 else "above"
    assert f"declared threshold 80.00% ({abs(worst - 0.8) * 100:.2f} points {side} the worst seed)" in table
    assert "(fp32, not the declared bf16_weights: " in table


class TwoOutputs(torch.nn.Module):
    """Logits and an auxiliary tensor: the check's output shape looks at the first tensor only, the loss cannot."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(784, 10)

    def forward(self, x):
        return self.fc(x.flatten(1)), x.mean()


def test_an_output_no_loss_can_take_is_named_as_the_models(small):
    recipe = dataclasses.replace(BF16, precision="fp32")
    with pytest.raises(MnistArchError, match=r"^The model's output is a tuple, and training needs one tensor of shape "
                                             r"\[batch, classes\]"):
        train_model(TwoOutputs(), recipe, small, RunOptions(threads=1))
    head = torch.nn.Sequential(torch.nn.Conv2d(1, 10, 28), torch.nn.AdaptiveAvgPool2d(1))  # never flattened
    with pytest.raises(MnistArchError, match=r"a tensor of shape \[64, 10, 1, 1\]"):
        train_model(head, recipe, small, RunOptions(threads=1))


def test_saving_is_ours_too(mnist_root, tmp_path, capsys):
    code = main(["train", "micro_cnn", "--time-budget", "0.5", "--device", "cpu", "--data-dir", str(mnist_root),
                 "--save", str(tmp_path / "no-such-folder" / "micro.pt")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert (f"mnist-arch's own set-up failed, not the model's code: saving the checkpoint to "
            f"{tmp_path / 'no-such-folder' / 'micro.pt'} raised ") in err, err



TWO_OUTPUTS = """\
import torch.nn as nn

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(784, 10)

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out, out.softmax(1)
"""


def test_an_output_training_cannot_take_names_the_model_and_its_file(tmp_path, monkeypatch, mnist_root, capsys):
    (tmp_path / "pyproject.toml").write_text('[tool.mnist-arch.models.net]\nmodel = "net.py:Net"\n'
                                             "[tool.mnist-arch.models.net.train]\nmin_accuracy = 0.5\n"
                                             "train_subset = 256\nloss = \"cross_entropy\"\n")
    (tmp_path / "net.py").write_text(TWO_OUTPUTS)
    monkeypatch.chdir(tmp_path)
    code = main(["train", "net", "--device", "cpu", "--data-dir", str(mnist_root)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith(f"mnist-arch train: Model net ({tmp_path / 'net.py'}:Net): The model's output is a tuple, "
                          "and training needs one tensor of shape [batch, classes]"), err
