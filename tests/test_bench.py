"""mnist_arch.bench and its parts (bench_prepare, bench_timing, roofline, bench_results, train_step): paths agree
with eager, the work and peak arithmetic, the bound rule, renderers, CLI.

No wall-clock assertions: timings only have to be positive numbers. The peak measurement is replaced
by a tiny one (64x64 matmul, 1 MB copy) wherever a test runs the whole pipeline.
"""

import copy
import dataclasses
import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from mnist_arch import bench, bench_prepare, bench_results, bench_timing, roofline, train, train_step
from mnist_arch.cli import main
from mnist_arch.errors import MnistArchError
from mnist_arch.machine import resolve_device
from mnist_arch.registry import create_model, get_spec
from mnist_arch.work import BenchRequest

#: Tolerances on the largest absolute output difference against eager fp32 (micro_cnn ends in
#: LogSoftmax, so these are log-probabilities of about -2.3). channels_last only reorders the
#: accumulation; bf16 keeps 8 mantissa bits (relative error ~ 2^-8 per op, compounded over 7 layers).
FP32_TOL = 1e-4
BF16_TOL = 0.25

ROW_KEYS = ["model", "kind", "path", "device", "dtype", "batch_size", "images_per_s", "median_s", "rounds",
            "setup_s", "mult_adds", "params", "flops_per_s", "peak_fraction", "arithmetic_intensity", "bound",
            "max_abs_diff", "top1_agreement", "input", "note", "skipped", "error"]


@pytest.fixture(autouse=True)
def one_thread():
    """These tests check values, not speed. On a loaded 2-core machine two OpenMP threads spin at every
    barrier (a micro_cnn forward of 8 images took 250 ms with two threads, 4 ms with one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_peaks(monkeypatch):
    """The command's set-up worker measures a tiny peak: the request the command line sends asks for one."""
    from mnist_arch import jobs

    whole = jobs.bench_project

    def tiny(project, models, request, **options):
        return whole(project, models, dataclasses.replace(request, matmul_size=64, copy_bytes=1 << 20), **options)

    monkeypatch.setattr(jobs, "bench_project", tiny)


def _eager_logits(name: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Independent of bench: the registered model built with the same seed, run plainly."""
    torch.manual_seed(seed)
    model = create_model(name).eval()
    with torch.no_grad():
        return model(x)


def test_parse_path_canonical_and_unknown():
    assert bench_results.parse_path("eager") == "eager"
    assert bench_results.parse_path("bf16+channels_last") == "channels_last+bf16"
    assert bench_results.parse_path("eager+compile") == "compile"
    for bad in ("fast", "bf16+fp8", ""):
        with pytest.raises(MnistArchError, match="Unknown benchmark path"):
            bench_results.parse_path(bad)


@pytest.mark.parametrize("path, tol", [("eager", 0.0), ("channels_last", FP32_TOL), ("bf16", BF16_TOL),
                                       ("channels_last+bf16", BF16_TOL)])
def test_paths_match_eager(path, tol):
    prepared = bench_prepare.prepare("micro_cnn", path, 8, "cpu", data_dir="/nonexistent")
    assert prepared.input_source == "random" and prepared.input.shape == (8, 1, 28, 28)
    out = prepared().float()
    expected = _eager_logits("micro_cnn", prepared.input.contiguous())
    assert (out - expected).abs().max().item() <= tol
    diff, agreement = bench_timing.compare_to_eager(prepared)
    assert diff <= tol
    assert prepared.dtype == ("bf16" if "bf16" in path else "fp32")
    if "bf16" not in path:
        assert agreement == 1.0
    if "channels_last" in path:
        assert prepared.input.is_contiguous(memory_format=torch.channels_last)


def test_prepare_leaves_the_callers_module_alone():
    model = create_model("micro_cnn").train()
    before = copy.deepcopy(model.state_dict())
    prepared = bench_prepare.prepare(model, "channels_last", 2, "cpu")
    prepared()
    assert model.training and prepared.name == "MicroCNN"
    weight = model.block1[3].weight  # 16x8x3x3: the two memory formats differ (block1[0] has C=1)
    assert weight.is_contiguous() and not weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_compile_failure_is_a_skip_with_reason(monkeypatch):
    def broken_compile(model, **kwargs):
        def run(x):
            raise RuntimeError("no working C compiler\nlong traceback")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.raises(bench_prepare.PathUnavailable,
                       match="torch.compile failed: RuntimeError: no working C compiler$"):
        bench_prepare.prepare("micro_cnn", "compile", 2, "cpu")


def test_cuda_only_paths_and_devices():
    with pytest.raises(bench_prepare.PathUnavailable, match="needs a CUDA device"):
        bench_prepare.prepare("micro_cnn", "cuda_graphs", 2, "cpu")
    for native in (True, False):  # bf16 is measured by default only where it is native (issue 19)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(bench_prepare, "native_bf16", lambda device, native=native: native)
            assert bench_prepare.default_paths("cpu") == ("eager", "channels_last", *(("bf16",) if native else ()),
                                                          "compile")
            assert "cuda_graphs" in bench_prepare.default_paths("cuda")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(MnistArchError, match="not supported"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_an_error():
    with pytest.raises(MnistArchError, match="sees no CUDA device"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")


def test_work_per_image_matches_the_declared_spec():
    spec = get_spec("micro_cnn")
    mult_adds, params, input_elems, acts = bench_timing.work_per_image(create_model("micro_cnn"))
    assert (mult_adds, params, input_elems) == (spec.exact_mult_adds, spec.exact_params, 28 * 28)
    # Leaf outputs: six conv, six BN, six ReLU, two pools, flatten, linear, log-softmax (by hand).
    convs = 8 * 26 * 26 + 16 * 24 * 24 + 16 * 10 * 10 + 16 * 8 * 8 + 16 * 2 * 2 + 16 * 1 * 1
    assert acts == 3 * convs + 16 * 12 * 12 + 16 * 4 * 4 + 16 + 10 + 10


def test_flops_and_traffic_arithmetic():
    assert roofline.achieved_flops(1_117_994, 1000.0) == 2 * 1_117_994 * 1000
    assert roofline.achieved_flops(100, 10.0, factor=3) == 6000
    assert roofline.achieved_flops(None, 10.0) is None
    assert roofline.traffic_bytes(params=10, input_elems=4, act_elems=3, batch_size=2,
                                  dtype="fp32") == 4 * (10 + 2 * 10)
    assert roofline.traffic_bytes(params=10, input_elems=4, act_elems=3, batch_size=2,
                                  dtype="bf16") == 2 * (10 + 2 * 10)


def test_measure_fills_work_and_peak_fraction():
    peaks = roofline.Peaks("cpu", {"fp32": 1e9, "bf16": 4e9}, bytes_per_s=1e8, matmul_size=64, copy_bytes=1)
    prepared = bench_prepare.prepare("micro_cnn", "eager", 4, "cpu")
    row = bench_timing.measure(prepared, min_time=0.0, peaks=peaks)
    assert row.rounds >= 3 and row.images_per_s > 0
    assert row.images_per_s == pytest.approx(4 / row.median_s)
    assert row.mult_adds == get_spec("micro_cnn").exact_mult_adds
    assert row.flops_per_s == pytest.approx(2 * row.mult_adds * row.images_per_s)
    assert row.peak_fraction == pytest.approx(row.flops_per_s / 1e9)
    assert (row.max_abs_diff, row.top1_agreement) == (0.0, 1.0)


def test_time_callable_counts_warmup_and_rounds():
    calls = []
    timing = bench_timing.time_callable(lambda: calls.append(1), min_time=0.0, min_rounds=5, warmup=0.0)
    assert timing.rounds == 5 and len(calls) == 6  # one warm-up call, then the timed ones
    assert 0 <= timing.min_s <= timing.median_s


def _row(model="m", path="eager", b=1, ips=100.0, ai=10.0, dtype="fp32", **kw):
    return bench_results.Row(model=model, kind="forward", path=path, device="cpu", dtype=dtype, batch_size=b,
                     images_per_s=ips, arithmetic_intensity=ai, **kw)


def test_classify_rule():
    peaks = roofline.Peaks("cpu", {"fp32": 100e9, "bf16": 400e9}, bytes_per_s=10e9, matmul_size=64, copy_bytes=1)
    # ridge: fp32 10 FLOP/byte, bf16 40 FLOP/byte
    small = _row(b=1, ips=100.0, ai=50.0)  # the big batch runs 10x the images/s -> overhead
    big = _row(b=1024, ips=1000.0, ai=50.0)  # largest batch: roofline, above the fp32 ridge
    mem = _row(model="n", b=1, ips=100.0, ai=5.0)
    mem_big = _row(model="n", b=64, ips=150.0, ai=5.0)  # only 1.5x: not overhead; below the ridge
    bf16 = _row(model="n", path="bf16", b=64, ai=20.0, dtype="bf16")  # above fp32's ridge, below bf16's
    skipped = _row(model="n", path="compile", ips=None, skipped="why")
    roofline.classify([small, big, mem, mem_big, bf16, skipped], peaks)
    assert [r.bound for r in (small, big, mem, mem_big, bf16, skipped)] == [
        "launch overhead", "compute", "memory", "memory", "memory", None]


def _result():
    rows = [_row(model="micro_cnn", path="eager", b=64, ips=1000.0, mult_adds=10, flops_per_s=2e4,
                 peak_fraction=0.01, bound="compute", max_abs_diff=0.0, top1_agreement=1.0),
            _row(model="micro_cnn", path="bf16", b=64, ips=2500.0, dtype="bf16", peak_fraction=0.02,
                 bound="memory", max_abs_diff=0.0123, top1_agreement=0.99, input="random"),
            _row(model="micro_cnn", path="compile", b=64, ips=None, skipped="torch.compile failed: X"),
            bench_results.Row(model="micro_cnn", kind="train", path="train", device="cpu", dtype="fp32", batch_size=128,
                      images_per_s=500.0, peak_fraction=0.05, note="optimizer adagrad, loss nll")]
    peaks = roofline.Peaks("cpu", {"fp32": 1e11, "bf16": 2e11}, bytes_per_s=2e10, matmul_size=2048, copy_bytes=1)
    meta = {"device": "cpu", "device_name": "Test CPU", "torch": "x", "threads": 2, "min_time_s": 0.5}
    return bench_results.BenchResult(meta, peaks, rows)


def test_renderers():
    result = _result()
    data = json.loads(bench_results.to_json(result))
    assert list(data) == ["meta", "peaks", "rows"]
    assert list(data["rows"][0]) == ROW_KEYS and data["peaks"]["flops"] == {"fp32": 1e11, "bf16": 2e11}
    table = bench_results.to_table(result)
    assert "skipped: torch.compile failed: X" in table and "2.5k" not in table and "2,500" in table
    md = bench_results.to_markdown(result)
    assert "| `micro_cnn` | 64 | 1,000 | 2,500 | - | 2.50x | bf16 | 2.0% | memory |" in md
    assert "`compile` skipped: torch.compile failed: X" in md
    assert "| `micro_cnn` | bf16 | 64 | random | 1.23e-02 | 99.00% |" in md
    assert "| `micro_cnn` | 128 | fp32 | optimizer adagrad, loss nll | 500 | 5.0% | - |" in md
    assert "Practical peak on cpu: 2048x2048 matmul fp32 100 GFLOP/s, bf16 200 GFLOP/s; copy 20 GB/s." in md


def test_train_step_follows_the_recipe():
    recipe = get_spec("micro_cnn").recipes.get("full")
    prepared = train_step.prepare_train_step("micro_cnn", batch_size=4)
    assert prepared.kind == "train" and prepared.batch_size == 4
    if recipe is not None:
        assert prepared.extra["optimizer"] == recipe.optimizer and prepared.extra["loss"] == recipe.loss
    before = [p.detach().clone() for p in prepared.model.parameters()]
    loss = prepared()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, prepared.model.parameters(), strict=True))


def test_train_step_runs_as_the_trainer_does():
    """The timed step is the trainer's: the recipe's memory layout and weight dtype, not just its optimizer."""
    recipe = get_spec("parallel_cnn").recipes["quick"]
    assert recipe.channels_last and recipe.precision == "bf16_weights"
    for native in (True, False):  # as on a CPU with native bf16, and as on one without (issue 19: fp32 there)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(train, "native_bf16", lambda device, native=native: native)
            prepared = train_step.prepare_train_step("parallel_cnn", batch_size=2, recipe=recipe)
        dtype = torch.bfloat16 if native else torch.float32
        convs = [m for m in prepared.model.modules() if isinstance(m, nn.Conv2d)]
        assert convs and all(c.weight.dtype == dtype for c in convs)
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs if c.kernel_size != (1, 1))
        assert prepared.input.is_contiguous(memory_format=torch.channels_last)
        assert prepared.dtype == ("bf16" if native else "fp32") and prepared.extra["precision"].startswith(
            "bf16_weights (" if native else "fp32, not the declared bf16_weights")
        assert torch.isfinite(prepared())


def test_train_step_without_recipe():
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    prepared = train_step.prepare_train_step(net, device="cpu")
    assert prepared.batch_size == train_step.TRAIN_BATCH_SIZE
    assert prepared.extra == {"optimizer": "sgd", "loss": "cross_entropy", "precision": "fp32"}


# ---------------------------------------------------------------------------------------------
# The command line


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json(capsys, tiny_peaks):
    code, out, err = run(capsys, "bench", "micro_cnn", "--batch-sizes", "1,4", "--paths", "eager,bf16+eager",
                         "--device", "cpu", "--min-time", "0.01", "--format", "json", "--data-dir", "/nonexistent")
    assert code == 0, err
    data = json.loads(out)
    assert data["meta"]["device"] == "cpu" and data["peaks"]["matmul_size"] == 64
    assert [(r["path"], r["batch_size"]) for r in data["rows"]] == [("eager", 1), ("eager", 4), ("bf16", 1),
                                                                    ("bf16", 4)]
    for r in data["rows"]:
        assert list(r) == ROW_KEYS and r["images_per_s"] > 0
        # where bf16 is not native its peak is not measured, so its rows have no roofline bound
        assert r["bound"] in roofline.BOUNDS or (r["dtype"] == "bf16" and not train.native_bf16("cpu")), r
        assert r["flops_per_s"] == pytest.approx(2 * r["mult_adds"] * r["images_per_s"])
    assert "bench: micro_cnn bf16 batch 4" in err


def test_cli_markdown_with_train(capsys, tiny_peaks):
    code, out, _ = run(capsys, "bench", "slim_cnn", "--batch-sizes", "2", "--paths", "eager,cuda_graphs",
                       "--device", "cpu", "--min-time", "0.01", "--format", "markdown", "--train")
    assert code == 0
    assert "`cuda_graphs` skipped: cuda_graphs needs a CUDA device" in out
    assert "| `slim_cnn` |" in out and "Training step" in out


@pytest.mark.parametrize("argv, message", [
    (["--paths", "eager,warp"], "Unknown benchmark path 'warp'"),
    (["no_such_net"], "No declared or registered model is named 'no_such_net'"),
])
def test_cli_bad_arguments_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "bench", *argv, "--device", "cpu")
    assert (code, out) == (2, "")
    assert err.startswith("mnist-arch bench: ") and message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cli_cuda_without_cuda_exits_2(capsys):
    code, out, err = run(capsys, "bench", "micro_cnn", "--device", "cuda")
    assert (code, out) == (2, "")
    assert "sees no CUDA device" in err and err.count("\n") == 1


def test_trained_weights_from_a_checkpoint(tmp_path):
    from mnist_arch.checkpoint import save_checkpoint
    from mnist_arch.runs import TrainResult

    trained = create_model("micro_cnn")
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)  # weights no seeded random init would produce
    path = tmp_path / "micro.pt"
    save_checkpoint(path, trained, get_spec("micro_cnn"), TrainResult("micro_cnn", "quick", 1, 1.0, 0.9))
    prepared = bench_prepare.prepare("micro_cnn", "eager", 2, "cpu", weights=str(path))
    for a, b in zip(prepared.model.state_dict().values(), trained.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    with pytest.raises(MnistArchError, match="holds weights of 'micro_cnn', not 'slim_cnn'"):
        bench_prepare.prepare("slim_cnn", "eager", 2, "cpu", weights=str(path))


@pytest.mark.parametrize("content", [None, b"not a checkpoint"])
def test_bad_checkpoint_is_a_clear_error(tmp_path, capsys, content):
    path = tmp_path / "weights.pt"
    if content is not None:
        path.write_bytes(content)
    assert main(["bench", "micro_cnn", "--weights", str(path), "--batch-sizes", "1"]) == 2
    err = capsys.readouterr().err
    assert f"Checkpoint {path}" in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# Declared models, each measured behind the wall (mnist_arch.isolate)

# conv 1->4 3x3 (4*9+4 = 40 parameters) on 28x28 gives 4x26x26, averaged, then fc 4->10 (50): 90 parameters;
# torchinfo's mult-adds count each weight once per output position: 40 * 26*26 + 50.
NET = (Path(__file__).resolve().parent / "user_models" / "small_net.py").read_text()  # 90 parameters
NET_PARAMS, NET_MULT_ADDS = 40 + 50, 40 * 26 * 26 + 50
FAST = ("--paths", "eager", "--device", "cpu", "--min-time", "0.05")


def user_repo(folder, batch_sizes="[1, 3]"):
    (folder / "model.py").write_text(NET)
    (folder / "pyproject.toml").write_text(f"[tool.mnist-arch]\nbench_batch_sizes = {batch_sizes}\n\n"
                                           "[tool.mnist-arch.models.net]\nmodel = \"model.py:Net\"\n")
    return folder


def test_declared_user_model(tmp_path, monkeypatch, capsys, tiny_peaks):
    monkeypatch.chdir(user_repo(tmp_path))
    code, out, err = run(capsys, "bench", *FAST, "--format", "json")
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert [(r["model"], r["path"], r["batch_size"]) for r in rows] == [("net", "eager", 1), ("net", "eager", 3)]
    for r in rows:
        assert (r["params"], r["mult_adds"]) == (NET_PARAMS, NET_MULT_ADDS) and r["images_per_s"] > 0
        assert r["flops_per_s"] == pytest.approx(2 * NET_MULT_ADDS * r["images_per_s"])
    assert "bench: net eager batch 3" in err


def test_one_home_for_measuring():
    """A built model goes through run_benchmarks like a registered name does."""
    namespace: dict = {}
    exec(NET, namespace)
    request = BenchRequest(batch_sizes=(2,), paths=("eager",), device="cpu", min_time=0.01, measure_peak=False)
    result = bench.run_benchmarks([bench_prepare.Subject("net", namespace["Net"]())], request)
    (row,) = result.rows
    assert (row.model, row.params, row.mult_adds, row.batch_size) == ("net", NET_PARAMS, NET_MULT_ADDS, 2)
    with pytest.raises(MnistArchError, match="No registered model is named 'no_such_net'"):
        bench.run_benchmarks(["no_such_net"], BenchRequest(measure_peak=False))


def _paragraphs(err):
    """The error paragraphs of stderr (the others are progress lines)."""
    return [line for line in err.splitlines() if not line.startswith("bench: ")]


def test_hostile_model_exit_2_the_others_still_measured(capsys, user_models, tiny_peaks):
    code, out, err = run(capsys, "bench", "slim_cnn", "--model", f"{user_models}/hostile/nets.py:ExitsInForward",
                         "--batch-sizes", "2", *FAST)
    assert code == 2 and "slim_cnn        forward eager" in out and "ExitsInForward" not in out
    (error,) = _paragraphs(err)
    assert error.startswith("mnist-arch bench: Model ") and "Traceback" not in err
    assert "ExitsInForward: the model's code exited the process with code 3 while being benchmarked" in error


def test_hanging_model_stopped_at_the_timeout(capsys, user_models, tiny_peaks):
    code, out, err = run(capsys, "bench", "--model", f"{user_models}/hostile/nets.py:SleepsInForward",
                         "--batch-sizes", "1", "--timeout", "1.5", *FAST)
    assert (code, out) == (2, "")
    (error,) = _paragraphs(err)
    assert "SleepsInForward: stopped at the time limit of 1.5 s while being benchmarked (phase: bench)" in error


@pytest.mark.parametrize("argv", [["--min-time", "inf"], ["--min-time", "-1"], ["--timeout", "0"],
                                  ["--timeout", "nan"], ["--batch-sizes", "0"], ["--threads", "0"]])
def test_bad_numbers_exit_2(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "micro_cnn", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[0]}: expected" in err and "Traceback" not in err


def test_bad_table_batch_sizes_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(user_repo(tmp_path, batch_sizes="[1, 0]"))
    code, out, err = run(capsys, "bench", *FAST)
    assert (code, out) == (2, "") and err.count("\n") == 1
    assert str(tmp_path / "pyproject.toml") in err and "'bench_batch_sizes' must be a whole number" in err


def test_checkpoint_of_a_model_not_benchmarked(tmp_path, capsys):
    from mnist_arch.checkpoint import save_checkpoint
    from mnist_arch.runs import TrainResult

    path = tmp_path / "micro.pt"
    save_checkpoint(path, create_model("micro_cnn"), get_spec("micro_cnn"), TrainResult("micro_cnn", "quick", 1, 1.0,
                                                                                         0.9))
    code, out, err = run(capsys, "bench", "slim_cnn", "--weights", str(path), *FAST)
    assert (code, out) == (2, "")
    assert "holds weights of 'micro_cnn', which is not among the models benchmarked (slim_cnn)" in err


def test_checkpoint_read_behind_the_wall_before_the_peak(tmp_path, capsys, tiny_peaks):
    """The command line reads no checkpoint itself (no torch there): the set-up worker says whose weights they are,
    the parent refuses a model not benchmarked before the peak is measured, and the owner's worker gets them."""
    from mnist_arch.checkpoint import save_checkpoint
    from mnist_arch.runs import TrainResult

    path = tmp_path / "micro.pt"
    save_checkpoint(path, create_model("micro_cnn"), get_spec("micro_cnn"),
                    TrainResult("micro_cnn", "quick", 1, 1.0, 0.9))
    code, out, err = run(capsys, "bench", "slim_cnn", "--weights", str(path), *FAST)
    assert (code, out) == (2, "") and "bench: peak" not in err
    code, out, err = run(capsys, "bench", "micro_cnn", "slim_cnn", "--weights", str(path), "--batch-sizes", "1",
                         *FAST, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["meta"]["weights"] == {"micro_cnn": str(path)}
    assert [r["model"] for r in data["rows"]] == ["micro_cnn", "slim_cnn"]


THREADS_NET = """
import torch
import torch.nn as nn


class Net(nn.Module):  # says, as the error of its batch-3 row, how many threads the worker measuring it runs
    def forward(self, x):
        if x.shape[0] == 3:
            raise RuntimeError(f"threads {torch.get_num_threads()}")
        return x.flatten(1)[:, :10]
"""


@pytest.mark.parametrize("threads", [None, 1])
def test_every_worker_runs_the_set_ups_threads(tmp_path, capsys, tiny_peaks, threads):
    """The threads are the set-up worker's (--threads, else torch's own default, as a fresh process has it: not
    the one thread a worker starts with), reported in the header and given to each model's worker."""
    import subprocess
    import sys

    (tmp_path / "threads.py").write_text(THREADS_NET)
    argv = ["--threads", str(threads)] if threads else []
    code, out, err = run(capsys, "bench", "--model", f"{tmp_path}/threads.py:Net", "--batch-sizes", "3", *FAST,
                         *argv, "--format", "json")
    assert code == 2
    expected = threads or int(subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
                                             capture_output=True, text=True, check=True).stdout)
    assert json.loads(out)["meta"]["threads"] == expected
    (error,) = _paragraphs(err)
    assert error.endswith(f"the eager row at batch 3 failed: RuntimeError: threads {expected}"), error
