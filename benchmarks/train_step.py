"""The trainer's own step (`mnist_arch.train.train_step`) under a microscope, for docs/training.md.

    python benchmarks/train_step.py profile micro_cnn [--recipe quick] [--threads N] [--batch-size B]
    python benchmarks/train_step.py speed wide_cnn --threads 2 [--seconds 3]
    python benchmarks/train_step.py contention micro_cnn wide_cnn parallel_cnn [--spin-counts 0 10000]
    python benchmarks/train_step.py ablation micro_cnn wide_cnn
    python benchmarks/train_step.py phases micro_cnn
    python benchmarks/train_step.py batchnorm micro_cnn
    python benchmarks/train_step.py precision micro_cnn bn_dropout_cnn slim_cnn wide_cnn parallel_cnn
    python benchmarks/train_step.py stand-ins

`profile`: a markdown table of where a step's time goes (torch.profiler self time grouped into
convolutions, batch norm, pooling, activations, dropout, augmentation, the optimizer, dtype casts,
matmuls, other operators, and Python and waiting: the wall time no operator accounts for).
`speed`: one JSON line, training images/s of the step at a thread count.
`contention`: for each model, `speed` in fresh processes at 1 and 2 threads, with OpenMP's default
(spinning) and passive waiting, alone and beside one process spinning on a core; a markdown table of
images/s and the slow-down (`--spin-counts`: also two threads with libgomp's spinning bounded by
GOMP_SPINCOUNT). `ablation`: `speed` as declared and with one speed-up taken away at a time
(channels_last, bf16 weights, bf16 autocast, the fused optimizer, dropout) or torch.compile added, with each
variant's set-up time. `phases`: one whole run of the recipe in this fresh process, timed phase by
phase (imports, data, model, threads, optimizer, training, evaluation): a markdown table. `batchnorm`:
each batch norm layer's forward and backward on bf16 input, contiguous against channels_last. `precision`:
each model's step as declared, in fp32 and in fp32 contiguous, on this CPU and under the stand-in for a CPU
without native bf16 (`NO_BF16`), one thread, fresh processes. `stand-ins`: what torch and the trainer's rule
answer under each environment that caps the CPU's instructions. Every command times the recipe as the trainer
runs it on this CPU (`mnist_arch.train.fit_recipe`), `speed --as-declared` as declared.
Threads default to the trainer's choice (`mnist_arch.machine.choose_threads`), which takes two only under
OMP_WAIT_POLICY=PASSIVE: the command line sets it, so prefix a command here with it to match a
`mnist-arch train` run of `wide_cnn` or `parallel_cnn`.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

_STARTED = time.perf_counter()  # for `phases`: the imports below are the first part of a run's start-up
import torch  # noqa: E402

_TORCH = time.perf_counter()
from mnist_arch import create_model, get_spec  # noqa: E402
from mnist_arch.data import load_mnist  # noqa: E402
from mnist_arch.machine import choose_threads  # noqa: E402
from mnist_arch.train import (  # noqa: E402
    RunOptions,
    evaluate,
    fit_recipe,
    make_optimizer,
    prepare_model,
    train_model,
    train_step,
)

_ENGINE = time.perf_counter()

# First match wins: (group, substrings of the operator's name).
GROUPS = [
    ("convolution", ("convolution", "conv2d", "mkldnn_conv")),
    ("batch norm", ("batch_norm",)),
    ("pooling", ("pool",)),
    ("activation", ("threshold", "relu", "clamp_min")),
    ("dropout", ("bernoulli", "dropout")),
    ("augmentation", ("grid_sampler", "affine_grid")),
    ("optimizer", ("Optimizer.", "_fused_", "lerp", "addcdiv", "addcmul")),
    ("dtype casts", ("aten::to", "_to_copy", "aten::copy_")),
    ("matmul", ("addmm", "aten::mm", "aten::bmm", "linear")),
]


def make_step(name: str, recipe_name: str = "quick", threads: int | None = None, batch_size: int | None = None,
              data_dir: str | None = None, changes: dict | None = None, fused: bool = True,
              compiled: bool = False, as_declared: bool = False,
              no_dropout: bool = False) -> tuple[Callable[[], None], int, int, float]:
    """(one training step on a random batch of real MNIST, batch size, threads, seconds of set-up and the
    first three steps); sets the thread count. `changes` replace recipe fields; `fused=False` takes the
    optimizer's per-tensor loop; `compiled` runs the model through torch.compile; `no_dropout` sets every
    dropout layer's p to 0 (torch then returns its input as it is: the step without dropout's cost). The
    recipe runs as the trainer would run it on this CPU (`fit_recipe`: fp32 where bf16 is not native), or
    `as_declared`."""
    recipe = dataclasses.replace(get_spec(name).recipes[recipe_name], **(changes or {}))
    recipe = recipe if as_declared else fit_recipe(recipe)[0]
    batch_size = batch_size or recipe.batch_size
    images, labels = load_mnist(data_dir)[:2]
    started = time.perf_counter()
    torch.manual_seed(0)
    model = prepare_model(create_model(name), recipe).train()
    for module in model.modules() if no_dropout else ():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd):
            module.p = 0.0
    threads = threads or choose_threads(model, recipe)
    torch.set_num_threads(threads)
    optimizer = make_optimizer(model, dataclasses.replace(
        recipe, optimizer_kwargs={**recipe.optimizer_kwargs, **({} if fused else {"fused": False})}))
    net = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)

    def step() -> None:
        idx = torch.randint(0, len(images), (batch_size,), generator=generator)
        train_step(net, optimizer, recipe, images[idx], labels[idx], generator)

    for _ in range(3):  # optimizer state, oneDNN primitives (and compiled code) are made on the first steps
        step()
    return step, batch_size, threads, time.perf_counter() - started


def profile(args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    step, batch_size, threads, _ = make_step(args.name, args.recipe, args.threads, args.batch_size, args.data_dir,
                                             args.set, no_dropout=args.no_dropout)
    started = time.perf_counter()
    with profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(args.steps):
            step()
    wall_ms = (time.perf_counter() - started) * 1e3 / args.steps
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        group = next((g for g, keys in GROUPS if any(k in event.key for k in keys)), "other operators")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e3 / args.steps
    groups["Python and waiting"] = max(0.0, wall_ms - sum(groups.values()))
    recipe = fit_recipe(get_spec(args.name).recipes[args.recipe])[0]
    print(f"{args.name} `{args.recipe}` step: batch {batch_size}, {recipe.precision}"
          f"{', channels_last' if recipe.channels_last else ''}, {recipe.optimizer}, {threads} thread(s): "
          f"{wall_ms:.1f} ms per step ({batch_size / wall_ms * 1e3:,.0f} images/s under the profiler)\n")
    print("| part | ms per step | share |\n| --- | ---: | ---: |")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"| {group} | {ms:.2f} | {ms / wall_ms:.1%} |")


def speed(args) -> None:
    step, batch_size, threads, setup_s = make_step(args.name, args.recipe, args.threads, args.batch_size,
                                                   args.data_dir, args.set, not args.unfused, args.compile,
                                                   args.as_declared, args.no_dropout)
    steps, started = 0, time.perf_counter()
    while steps < 3 or time.perf_counter() - started < args.seconds:
        step()
        steps += 1
    print(json.dumps({"name": args.name, "threads": threads, "batch_size": batch_size,
                      "images_per_s": steps * batch_size / (time.perf_counter() - started), "setup_s": setup_s,
                      "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default")}))


#: The ablation's variants: (label, extra `speed` arguments).
VARIANTS = [
    ("as declared", []),
    ("contiguous (no channels_last)", ["--set", "channels_last=False"]),
    ("bf16 autocast (fp32 weights)", ["--set", "precision='bf16'"]),
    ("fp32", ["--set", "precision='fp32'"]),
    ("unfused optimizer", ["--unfused"]),
    ("torch.compile", ["--compile"]),
    ("no dropout (p = 0: dropout's own cost)", ["--no-dropout"]),
]


def ablation(args) -> None:
    print("| model | variant | threads | images/s | vs declared | set-up and first 3 steps s |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    for name in args.names:
        declared, recipe = None, get_spec(name).recipes[args.recipe]
        for label, extra in VARIANTS:
            if extra[:1] == ["--set"] and _change(extra[1]) in dataclasses.asdict(recipe).items():
                continue  # that is the recipe as declared
            if extra == ["--no-dropout"] and not any(isinstance(m, torch.nn.modules.dropout._DropoutNd)
                                                     for m in create_model(name).modules()):
                continue  # nothing to take away
            argv = [sys.executable, __file__, "speed", name, "--recipe", args.recipe, "--seconds", str(args.seconds),
                    "--as-declared", *extra] + (["--data-dir", args.data_dir] if args.data_dir else [])
            out = json.loads(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            declared = declared or out["images_per_s"]
            print(f"| `{name}` | {label} | {out['threads']} | {out['images_per_s']:,.0f} | "
                  f"{out['images_per_s'] / declared:.2f}x | {out['setup_s']:.1f} |", flush=True)


#: A CPU without native bf16, stood in for on one that has it (docs/training.md): oneDNN and ATen capped at AVX2.
NO_BF16 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


#: The environments of the stand-in table (docs/training.md): none, each variable alone, both, and AVX-512
#: without its bf16 instructions.
STAND_INS = [{}, {"ONEDNN_MAX_CPU_ISA": "AVX2"}, {"ATEN_CPU_CAPABILITY": "avx2"}, NO_BF16,
             {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE"}]


def stand_ins(args) -> None:
    """What torch and the trainer's rule (`native_bf16`) answer under each environment of `STAND_INS`, each in
    a fresh process (the variables are read when torch loads): a markdown table."""
    probe = ("import torch; from mnist_arch.machine import native_bf16; print(torch.backends.cpu.get_cpu_capability(), "
             "torch.ops.mkldnn._is_mkldnn_bf16_supported(), native_bf16('cpu'))")
    print("| environment | `get_cpu_capability()` | `_is_mkldnn_bf16_supported()` | `machine.native_bf16('cpu')` |\n"
          "| --- | --- | --- | --- |")
    for env in STAND_INS:
        out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, **env}, capture_output=True, text=True,
                             check=True).stdout.split()
        label = " ".join(f"`{k}={v}`" for k, v in env.items()) or "none"
        print(f"| {label} | {out[0]} | {out[1]} | {out[2]} |")


def precision(args) -> None:
    """Each model's step as declared, in fp32, and in fp32 without channels_last, on this CPU, under the no-bf16
    stand-in and with oneDNN capped at AVX-512 without its bf16 instructions (where it still answers that bf16
    is supported, and emulates it), each a fresh process at the recipe's batch size and one thread: a
    markdown table."""
    variants = [("as declared", ["--as-declared"]), ("fp32", ["--set", "precision='fp32'"]),
                ("fp32, contiguous", ["--set", "precision='fp32'", "--set", "channels_last=False"])]
    machines = [("this CPU", {}), ("no-bf16 stand-in", NO_BF16), ("AVX-512, oneDNN's bf16", STAND_INS[-1])]
    print("| model | declared | " + " | ".join(f"{m}: {v} img/s" for m, _ in machines for v, _ in variants)
          + " | stand-in: fp32 / as declared |\n| --- | --- |" + " ---: |" * (len(machines) * len(variants) + 1))
    for name in args.names:
        recipe = get_spec(name).recipes[args.recipe]
        measured = {}
        for machine, env in machines:
            for label, extra in variants:
                argv = [sys.executable, __file__, "speed", name, "--recipe", args.recipe, "--threads", "1",
                        "--seconds", str(args.seconds), *extra]
                argv += ["--data-dir", args.data_dir] if args.data_dir else []
                out = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, check=True)
                measured[machine, label] = json.loads(out.stdout.splitlines()[-1])["images_per_s"]
        layout = ", channels_last" if recipe.channels_last else ""
        print(f"| `{name}` | {recipe.precision}{layout}, batch {recipe.batch_size} | "
              + " | ".join(f"{measured[m, v]:,.0f}" for m, _ in machines for v, _ in variants)
              + f" | {measured['no-bf16 stand-in', 'fp32'] / measured['no-bf16 stand-in', 'as declared']:.1f}x |",
              flush=True)


@contextlib.contextmanager
def busy_process(busy: bool):
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
    try:
        time.sleep(0.2 if busy else 0)
        yield
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


def contention(args) -> None:
    print("| model | OpenMP waiting | threads | alone img/s | beside a busy process img/s | slow-down |\n"
          "| --- | --- | ---: | ---: | ---: | ---: |")
    # (label, environment changes, thread counts): libgomp's waits, from spinning (its default spins a
    # while, then sleeps) to sleeping at once; GOMP_SPINCOUNT bounds the spinning of the default policy.
    waits = [("spinning (default)", {}, (1, 2)), ("passive", {"OMP_WAIT_POLICY": "PASSIVE"}, (1, 2))]
    waits += [(f"spinning, GOMP_SPINCOUNT={n}", {"GOMP_SPINCOUNT": str(n)}, (2,)) for n in args.spin_counts]
    for name in args.names:
        for label, changes, thread_counts in waits:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
            env.update(changes)
            for threads in thread_counts:
                measured = {}
                for busy in (False, True):  # alone, then beside the busy process
                    argv = [sys.executable, __file__, "speed", name, "--recipe", args.recipe, "--threads", str(threads),
                            "--seconds", str(args.seconds)] + (["--data-dir", args.data_dir] if args.data_dir else [])
                    with busy_process(busy):
                        out = subprocess.run(argv, env=env, capture_output=True, text=True, check=True).stdout
                    measured[busy] = json.loads(out.splitlines()[-1])["images_per_s"]
                print(f"| `{name}` | {label} | {threads} | {measured[False]:,.0f} | {measured[True]:,.0f} | "
                      f"{measured[False] / measured[True]:.2f}x |", flush=True)


def batchnorm(args) -> None:
    """Each batch norm layer of the model, forward and backward in training mode on a bf16 batch of its
    recorded input shape, in the contiguous layout and in channels_last: a markdown table."""
    recipe = get_spec(args.name).recipes[args.recipe]
    torch.set_num_threads(args.threads or 1)
    model = create_model(args.name).train()
    layers = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    shapes = {}

    def record(module, inputs) -> None:
        shapes[next(n for n, m in layers.items() if m is module)] = inputs[0].shape

    hooks = [m.register_forward_pre_hook(record) for m in layers.values()]
    model(torch.zeros(args.batch_size or recipe.batch_size, 1, 28, 28))
    for hook in hooks:
        hook.remove()
    print(f"{args.name}: batch norm forward + backward, bf16 input, fp32 weights, {torch.get_num_threads()} "
          f"thread(s), microseconds\n\n| layer | input | contiguous | channels_last | channels_last / contiguous |\n"
          "| --- | --- | ---: | ---: | ---: |")
    for name, shape in shapes.items():
        layer, timings = layers[name], []
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=layout).requires_grad_()
            grad = torch.randn(shape).to(torch.bfloat16).contiguous(memory_format=layout)
            steps, started = 0, time.perf_counter()
            while steps < 10 or time.perf_counter() - started < args.seconds / 2:
                layer(x).backward(grad)
                steps += 1
            timings.append((time.perf_counter() - started) / steps * 1e6)
        print(f"| {name} | {list(shape)} | {timings[0]:,.0f} | {timings[1]:,.0f} | {timings[1] / timings[0]:.2f}x |")


def phases(args) -> None:
    """Where one run of a recipe spends its seconds, in this fresh process, phase by phase in the order
    `mnist-arch train` meets them (its worker is forked from a process that has done the imports)."""
    recipe = fit_recipe(get_spec(args.name).recipes[args.recipe])[0]  # as the trainer runs it on this CPU
    rows = [("import torch", _TORCH - _STARTED), ("import the engine and the references", _ENGINE - _TORCH)]

    def timed(label: str, func: Callable):
        started = time.perf_counter()
        value = func()
        rows.append((label, time.perf_counter() - started))
        return value

    data = timed("load MNIST", lambda: load_mnist(args.data_dir))
    torch.manual_seed(0)
    model = timed("build the model", lambda: create_model(args.name))
    threads = args.threads or timed("choose threads", lambda: choose_threads(model, recipe))
    dynamo = "torch._dynamo" in sys.modules
    timed("create the optimizer" + ("" if dynamo else " (torch.optim imports torch._dynamo)"),
          lambda: make_optimizer(prepare_model(create_model(args.name), recipe), recipe))
    result = train_model(model, recipe, data, RunOptions(name=args.name, threads=threads))
    # The run's seconds include one evaluation per epoch: time one more to split them.
    started = time.perf_counter()
    evaluate(prepare_model(model, recipe), data.test_images, data.test_labels, recipe)
    evaluation = result.epochs * (time.perf_counter() - started)
    training = result.seconds - evaluation
    images = result.epochs * len(data.train_images[: recipe.train_subset or None])
    rows += [(f"train: {images:,} images, {images / training:,.0f} images/s", training),
             (f"evaluate the 10,000 test images, {result.epochs} time(s)", evaluation)]
    total = sum(seconds for _, seconds in rows)
    print(f"{args.name} `{args.recipe}` recipe, {threads} thread(s), seed 0: test accuracy "
          f"{result.test_accuracy:.2%}; {total:.1f} s in this process\n")
    print("| phase | seconds | share |\n| --- | ---: | ---: |")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.2f} | {seconds / total:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    commands = {"profile": profile, "speed": speed, "contention": contention, "ablation": ablation, "phases": phases,
                "batchnorm": batchnorm, "precision": precision, "stand-ins": stand_ins}
    for command in commands:
        p = sub.add_parser(command)
        several = command in ("contention", "ablation", "precision")
        if command != "stand-ins":
            p.add_argument("names" if several else "name", nargs="+" if several else None)
        p.add_argument("--recipe", default="quick")
        p.add_argument("--data-dir")
        p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
        if not several:
            p.add_argument("--threads", type=int)
            p.add_argument("--batch-size", type=int)
            p.add_argument("--set", type=_change, action="append", metavar="FIELD=VALUE",
                           help="replace a recipe field (a Python literal)")
            p.add_argument("--steps", type=int, default=30, help="profiled steps")
            p.add_argument("--unfused", action="store_true", help="the optimizer's per-tensor loop")
            p.add_argument("--compile", action="store_true", help="torch.compile the model")
            p.add_argument("--no-dropout", action="store_true", help="every dropout layer's p set to 0")
            p.add_argument("--as-declared", action="store_true",
                           help="the recipe's declared precision even where this CPU has no native bf16")
        if command == "contention":
            p.add_argument("--spin-counts", nargs="*", type=int, default=[], metavar="N",
                           help="also two threads under the default policy with GOMP_SPINCOUNT=N")
    args = parser.parse_args()
    if hasattr(args, "set"):
        args.set = dict(args.set or [])
    commands[args.command](args)


def _change(text: str) -> tuple[str, object]:
    field, _, value = text.partition("=")
    return field, ast.literal_eval(value)


if __name__ == "__main__":
    main()
