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


# ---------------------------------------------------------------------------------------------


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
