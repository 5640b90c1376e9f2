"""`mnist-arch`: a thin face over the library. It parses, calls, prints; exit codes:
0 every check passed, 1 a check failed, 2 bad arguments or a model that cannot be imported, built or run.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from mnist_arch.errors import MnistArchError
from mnist_arch.spec import FEATURES


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated whole numbers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive numbers, got {text!r}")
    return values


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text:
            low, high = (int(v) for v in text.split("-"))
            return list(range(low, high + 1))
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed, 0,1,2 or 0-4, got {text!r}") from None


def _input_shape(text: str) -> tuple[int, ...]:
    shape = _int_list(text)
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three numbers), got {text!r}")
    return shape


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {text!r}")
    return value


# ---------------------------------------------------------------------------------------------


def _cmd_list(args) -> int:
    from mnist_arch.registry import get_spec, list_models

    for name in list_models(args.pattern):
        spec = get_spec(name)
        print(f"{name:16} {spec.exact_params or 0:>12,} parameters")
    return 0


def _cmd_summary(args) -> int:
    import torchinfo

    from mnist_arch.loader import load_model
    from mnist_arch.registry import create_model, get_spec

    model = load_model(args.name) if ":" in args.name else create_model(args.name)
    shape = get_spec(args.name).input_shape if ":" not in args.name else args.input_shape
    stats = torchinfo.summary(model, input_size=(1, *shape), verbose=0, depth=args.depth,
                              col_names=("output_size", "num_params", "mult_adds"))
    print(stats)
    return 0


def _check_changes(args) -> dict:
    from mnist_arch.spec import parse_spec_fields, read_spec_file

    changes = read_spec_file(args.spec) if args.spec else {}
    given = {"max_params": args.max_params, "exact_params": args.exact_params,
             "max_mult_adds": args.max_mult_adds, "num_classes": args.num_classes,
             "input_shape": list(args.input_shape) if args.input_shape else None,
             "require": args.require}
    changes.update(parse_spec_fields({k: v for k, v in given.items() if v}, "the command line"))
    return changes


def _cmd_check(args) -> int:
    from mnist_arch.checks import check_model
    from mnist_arch.loader import load_model
    from mnist_arch.registry import check_registered, list_models
    from mnist_arch.report import FORMATS
    from mnist_arch.spec import Spec

    changes = _check_changes(args)
    names = args.names or ([] if args.model else list_models())
    reports = [check_registered(name, changes) for name in names]
    reports += [check_model(load_model(target), Spec().with_changes(changes), name=target)
                for target in args.model]
    print(FORMATS[args.format](reports))
    return 0 if all(r.passed for r in reports) else 1


def _cmd_diff(args) -> int:
    from mnist_arch.diff import FORMATS, diff_against

    diff = diff_against(args.base)
    print(FORMATS[args.format](diff), end="" if args.format == "markdown" else "\n")
    return 0 if diff.passed else 1


def _cmd_badge(args) -> int:
    from mnist_arch.diff import remote_badge

    print(remote_badge(remote=args.remote))
    return 0


def _cmd_train(args) -> int:
    import json

    import torch

    from mnist_arch.data import load_mnist
    from mnist_arch.registry import create_model, get_spec
    from mnist_arch.train import resolve_device, runs_table, save_checkpoint, train_model

    spec = get_spec(args.name)
    if args.recipe not in spec.recipes:
        raise MnistArchError(f"{args.name} declares no {args.recipe!r} recipe; it has "
                             f"{', '.join(spec.recipes) or 'none'}.")
    recipe = spec.recipes[args.recipe]
    device = resolve_device(args.device)
    data = load_mnist(args.data_dir, device=device)
    results = []
    for seed in args.seed:
        torch.manual_seed(seed)  # the initial weights too: a seed repeats the whole run
        model = create_model(args.name)
        result = train_model(model, recipe, data, name=args.name, recipe_name=args.recipe, epochs=args.epochs,
                             seed=seed, device=device, time_budget=args.time_budget,
                             progress=args.format == "text" and sys.stderr.isatty())
        results.append(result)
        if args.plots:
            from mnist_arch.plots import save_plots

            save_plots(result, data.test_images, data.test_labels, args.plots)
        if args.save:
            save_checkpoint(args.save, model, spec, result)
        if args.format == "text":
            for e in result.history:
                print(f"epoch {e.epoch:3}  train loss {e.train_loss:.4f}  acc {e.train_accuracy:.2%}  test loss "
                      f"{e.test_loss:.4f}  acc {e.test_accuracy:.2%}  lr {e.lr:.5f}  {e.seconds:.1f}s")
            print(f"{args.name} ({args.recipe}, seed {seed}): test accuracy {result.test_accuracy:.2%} after "
                  f"{result.epochs} epoch(s) in {result.seconds:.1f}s on {device.type}; threshold "
                  f"{recipe.min_accuracy:.2%}")
            if result.collapsed:
                print(f"collapsed: {result.collapsed['share']:.1%} of the test predictions are class "
                      f"{result.collapsed['class']} (an MNIST class is about 10%)")
    if args.format == "json":
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    elif args.format == "markdown":
        print(runs_table(results, args.seed, recipe))
    passed = all(r.test_accuracy >= recipe.min_accuracy and r.collapsed is None for r in results)
    return 0 if passed else 1


def _cmd_bench(args) -> int:
    from mnist_arch.bench import FORMATS, parse_path, run_benchmarks
    from mnist_arch.registry import list_models

    paths = [parse_path(p) for p in args.paths.split(",")] if args.paths else None  # bad path: exit 2 now
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = args.names or list_models()
    weights = {}
    if args.weights:
        from mnist_arch.train import load_checkpoint

        weights = {load_checkpoint(args.weights)["model"]: args.weights}
    result = run_benchmarks(names, args.batch_sizes, paths, args.device, min_time=args.min_time,
                            train=args.train, data_dir=args.data_dir, weights=weights,
                            progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    print(FORMATS[args.format](result), end="" if args.format == "markdown" else "\n")
    return 0


# --- init (owned by the workflows work: edit only between these markers) ----------------------


def _cmd_init(args) -> int:
    from mnist_arch.init import init_project

    result = init_project(args)
    print(result)
    return 0


def _add_init_parser(sub) -> None:
    p = sub.add_parser("init", help="declare a model in pyproject.toml and write the GitHub workflows")
    p.add_argument("--model", required=True, metavar="PATH.py:ATTR")
    p.add_argument("--force", action="store_true", help="overwrite files that exist")
    p.set_defaults(func=_cmd_init)


# --- end of init ------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mnist-arch", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered architectures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. '*cnn*'")
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("summary", help="torchinfo table of one model (NAME or PATH.py:ATTR)")
    p.add_argument("name")
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--input-shape", type=_input_shape, default=(1, 28, 28), metavar="C,H,W")
    p.set_defaults(func=_cmd_summary)

    p = sub.add_parser("check", help="judge models against their specs")
    p.add_argument("names", nargs="*", metavar="NAME", help="registered models (default: all, unless --model)")
    p.add_argument("--model", action="append", default=[], metavar="PATH.py:ATTR",
                   help="a model of your own: PATH.py:ATTR or package.module:ATTR (repeatable)")
    p.add_argument("--spec", metavar="FILE.toml", help="spec fields from a TOML file")
    p.add_argument("--max-params", type=_count, metavar="N")
    p.add_argument("--exact-params", type=_count, metavar="N")
    p.add_argument("--max-mult-adds", type=_count, metavar="N")
    p.add_argument("--require", action="append", default=[], choices=FEATURES)
    p.add_argument("--input-shape", type=_input_shape, metavar="C,H,W")
    p.add_argument("--num-classes", type=_count, metavar="K")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser("train", help="train a registered model with its declared recipe on real MNIST")
    p.add_argument("name")
    p.add_argument("--recipe", choices=("quick", "full"), default="quick")
    p.add_argument("--epochs", type=_count, help="override the recipe's epochs")
    p.add_argument("--seed", type=_seeds, default=[0], help="a seed, or several: 0,1,2 or 0-4")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help="folder containing MNIST/raw (default: $MNIST_ARCH_DATA)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop training after this long")
    p.add_argument("--plots", metavar="DIR", help="write curves, confusion matrix and predictions as PNG")
    p.add_argument("--save", metavar="PATH", help="write weights, spec and metrics (torch.save)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="markdown: a table of the seeds' runs against the threshold")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("diff", help="parameters and mult-adds of every registered model: a git revision vs the "
                                    "working tree, with budget verdicts")
    p.add_argument("--base", required=True, metavar="REF", help="branch, tag or commit to compare against")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("badge", help="the README's workflow badge, derived from the git remote")
    p.add_argument("--remote", default="origin")
    p.set_defaults(func=_cmd_badge)

    p = sub.add_parser("bench", help="forward (and training) throughput per path, against the machine's peak")
    p.add_argument("names", nargs="*", metavar="NAME", help="registered models (default: all)")
    p.add_argument("--batch-sizes", type=_int_list, default=(1, 64, 1024), metavar="B,B,...")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--paths", metavar="P,P,...",
                   help="eager, channels_last, bf16, compile, cuda_graphs, or '+'-joined combinations "
                        "(default: eager,channels_last,bf16,compile, plus cuda_graphs on CUDA)")
    p.add_argument("--min-time", type=float, default=0.5, metavar="S",
                   help="time each row for at least S seconds (and at least 3 calls)")
    p.add_argument("--train", action="store_true", help="also time one training step per model")
    p.add_argument("--threads", type=_count, metavar="N", help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", metavar="ROOT",
                   help="MNIST root for the accuracy batch (test images; random input without them)")
    p.add_argument("--weights", metavar="CHECKPOINT",
                   help="trained weights from `mnist-arch train --save` for the model they belong to "
                        "(fast paths' top-1 agreement is then measured on a trained network)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.set_defaults(func=_cmd_bench)

    _add_init_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MnistArchError as exc:
        print(f"mnist-arch {args.command}: {exc}", file=sys.stderr)
        return 2


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())


if __name__ == "__main__":
    run()
