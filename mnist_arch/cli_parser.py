"""What the command line accepts: its arguments, their types and help, one sub-parser per command. Each
command's name (`args.command`) picks its function in `mnist_arch.cli`, which runs it."""

from __future__ import annotations

import argparse

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
        if "-" in text.lstrip("-"):
            low, high = (int(v) for v in text.split("-"))
            seeds = list(range(low, high + 1))
        else:
            seeds = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a seed, 0,1,2 or 0-4, got {text!r}") from None
    if not seeds or any(s < 0 for s in seeds):
        raise argparse.ArgumentTypeError(f"{text!r} names no seed: give 0,1,2 or a range low-high with low <= high")
    return seeds


def _input_shape(text: str) -> tuple[int, ...]:
    shape = _int_list(text)
    if len(shape) != 3:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three numbers), got {text!r}")
    return shape


def _seconds(text: str) -> float:
    from mnist_arch.spec import parse_seconds

    try:
        return parse_seconds(float(text), "SECONDS", "the command line")
    except (ValueError, MnistArchError) as exc:
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0 and at most a week, got {text!r}"
                                         ) from exc


def _count(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of the test set in (0, 1], e.g. 0.994, got {text!r}")
    return value


def _min_accuracy(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.98, or auto, got {text!r}") from None


_REQUIRE_TABLE_HELP = ("exit 2 unless a pyproject.toml here or above declares models in [tool.mnist-arch] "
                       "(without one, check judges the five reference architectures): for hooks and CI")
_TIMEOUT_HELP = ("seconds a model may spend in one phase (import, build, forward) before it is stopped "
                 "(default: timeout in [tool.mnist-arch], else 120)")


def build_parser() -> argparse.ArgumentParser:
    from mnist_arch import __version__

    parser = argparse.ArgumentParser(
        prog="mnist-arch", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Declared facts about MNIST convolutional networks (parameter budgets, required layers, output "
                    "shape, accuracy after a short training), proven for the models in [tool.mnist-arch] of "
                    "pyproject.toml, for --model PATH.py:ATTR, or for the five reference architectures.",
        epilog="exit codes:\n"
               "  0  every check passed\n"
               "  1  a check failed on a model that ran (check, pytest items), the pull request broke a rule (diff),\n"
               "     a training run missed its threshold or its rule (train), no trial met the rule or all stayed\n"
               "     near chance (tune)\n"
               "  2  anything else: wrong arguments, or a model that cannot be imported, built, run or judged\n"
               "     (one paragraph on stderr, never a traceback)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered architectures")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. '*cnn*'")

    p = sub.add_parser("summary", help="per module: output shape, parameters, mult-adds, receptive field "
                                       "(NAME or PATH.py:ATTR)")
    p.add_argument("name")
    p.add_argument("--depth", type=_count, default=3, help="module names with fewer than N dots (default 3)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument("--input-shape", type=_input_shape, metavar="C,H,W")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help=_TIMEOUT_HELP)

    p = sub.add_parser("check", help="judge models against their specs")
    p.add_argument("names", nargs="*", metavar="NAME", help="registered models (default: all, unless --model)")
    p.add_argument("--model", action="append", default=[], metavar="PATH.py:ATTR",
                   help="a model of your own: PATH.py:ATTR or package.module:ATTR (repeatable)")
    p.add_argument("--spec", metavar="FILE.toml", help="spec fields from a TOML file")
    p.add_argument("--max-params", type=_count, metavar="N", help="budget: at most N parameters")
    p.add_argument("--params-below", type=_count, metavar="N", help="budget: fewer than N parameters")
    p.add_argument("--exact-params", type=_count, metavar="N")
    p.add_argument("--max-mult-adds", type=_count, metavar="N")
    p.add_argument("--require", action="append", default=[], choices=FEATURES,
                   help="a feature that must run (repeatable; adds to the spec's)")
    p.add_argument("--require-any", action="append", default=[], metavar="F,F",
                   help="at least one of these features, e.g. gap,fc (repeatable)")
    p.add_argument("--input-shape", type=_input_shape, metavar="C,H,W")
    p.add_argument("--num-classes", type=_count, metavar="K")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help=_TIMEOUT_HELP)
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument("--require-table", action="store_true", help=_REQUIRE_TABLE_HELP)

    p = sub.add_parser("train", help="train a declared or registered model with its recipe on real MNIST")
    p.add_argument("name")
    p.add_argument("--tier", "--recipe", dest="recipe", choices=("quick", "full", "rule"), default="quick",
                   help="quick: the floor (one short run against min_accuracy); full: a reference's published recipe; "
                        "rule: the course's rule in the [...rule] table, held for `consecutive` epochs in a row "
                        "within `epochs` (docs/rule.md)")
    p.add_argument("--epochs", type=_count, help="override the recipe's epochs (not with --tier rule)")
    p.add_argument("--seed", type=_seeds, default=None,
                   help="a seed, or several: 0,1,2 or 0-4 (default: 0; for --tier rule, the rule's seed)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help="folder containing MNIST/raw (default: $MNIST_ARCH_DATA, else data in "
                   "[tool.mnist-arch], else the user's cache)")
    p.add_argument("--time-budget", type=_seconds, metavar="SECONDS", help="stop training after this long")
    p.add_argument("--threads", type=_count, metavar="N", help="CPU threads (default: chosen per model and batch)")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="seconds one epoch (or the import and build) may take (default: train_timeout, 1800)")
    p.add_argument("--plots", metavar="DIR", help="write curves, confusion matrix and predictions as PNG")
    p.add_argument("--save", metavar="PATH", help="write weights, spec and metrics (torch.save)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="markdown: a table of the seeds' runs against the threshold (--tier rule: a table of "
                        "each run's epochs and which of them held the threshold)")

    p = sub.add_parser("diff", help="the pull-request gate: parameters, mult-adds and checks of the declared models, "
                                    "a git revision vs the working tree; exit 1 when a check newly fails or gets "
                                    "worse, or a rule changes (docs/gate.md)")
    p.add_argument("--base", required=True, metavar="REF", help="branch, tag or commit to compare against")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="seconds a model may spend in one phase (import, build, forward) before it is stopped, on "
                        "both sides (default: each side's own timeout in [tool.mnist-arch], else 120)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument("--require-table", action="store_true", help=_REQUIRE_TABLE_HELP)
    p.add_argument("--allow-rule-changes", action="store_true",
                   help="a model removed, a rule dropped or a limit loosened in the working tree's table is still "
                        "reported, but does not fail the gate by itself")

    p = sub.add_parser("badge", help="the README's workflow badge, derived from the git remote")
    p.add_argument("--remote", default="origin")

    p = sub.add_parser("bench", help="forward (and training) throughput of the declared models per path, against "
                                     "the machine's peak")
    p.add_argument("names", nargs="*", metavar="NAME",
                   help="declared models (default: all, unless --model; shell-style patterns allowed)")
    p.add_argument("--model", action="append", default=[], metavar="PATH.py:ATTR",
                   help="a model of your own: PATH.py:ATTR or package.module:ATTR (repeatable)")
    p.add_argument("--batch-sizes", type=_int_list, metavar="B,B,...",
                   help="default: bench_batch_sizes in [tool.mnist-arch] (1,64 when unset); 1,64,1024 for the "
                        "registry")
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    p.add_argument("--paths", metavar="P,P,...",
                   help="eager, channels_last, bf16, compile, cuda_graphs, or '+'-joined combinations "
                        "(default: eager,channels_last,bf16,compile, plus cuda_graphs on CUDA; bf16 only where the "
                        "device computes it natively)")
    p.add_argument("--min-time", type=_seconds, default=0.5, metavar="S",
                   help="time each row for at least S seconds (and at least 3 calls)")
    p.add_argument("--train", action="store_true", help="also time one training step per model")
    p.add_argument("--threads", type=_count, metavar="N", help="torch CPU threads (default: torch's)")
    p.add_argument("--data-dir", metavar="ROOT",
                   help="MNIST root for the accuracy batch (test images; random input without them; default: "
                        "$MNIST_ARCH_DATA, else data in [tool.mnist-arch])")
    p.add_argument("--weights", metavar="CHECKPOINT",
                   help="trained weights from `mnist-arch train --save` for the model they belong to "
                        "(fast paths' top-1 agreement is then measured on a trained network)")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="seconds a model may spend building or measuring one row before it is stopped "
                        "(default: timeout in [tool.mnist-arch], else 120)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")

    _add_init_parser(sub)
    _add_tune_parser(sub)
    return parser


def _add_tune_parser(sub) -> None:
    from mnist_arch import tune

    p = sub.add_parser("tune", help="search a recipe that meets a model's rule (Optuna; pip install "
                                    "\"mnist-arch[tune]\")",
                       description="Search the recipe space (optimizer, lr, momentum, schedule, batch size, weight "
                                   "decay, augmentation, label smoothing) for the recipe that meets the model's rule "
                                   "in the fewest epochs, then at the highest accuracy (docs/tune.md). A study is "
                                   "stored, so running the same command again continues it; other processes or "
                                   "machines running the same command share it.",
                       epilog="exit codes: 0 a trial met the rule; 1 none did, or every trial stayed near chance; "
                              "2 anything else (one paragraph on stderr)")
    p.add_argument("name", nargs="?", help="a declared model with a [tool.mnist-arch.models.NAME.rule] table")
    p.add_argument("--model", metavar="PATH.py:ATTR", help="a model of your own (with --threshold and --epochs)")
    p.add_argument("--threshold", type=_fraction, metavar="X", help="the rule, for a model that declares none: "
                   "test accuracy to reach, e.g. 0.994")
    p.add_argument("--epochs", type=_count, metavar="N", help="the rule: within at most N epochs")
    p.add_argument("--consecutive", type=_count, metavar="K", help="the rule: K epochs in a row (default 1)")
    p.add_argument("--trials", type=_count, default=tune.DEFAULT_TRIALS, metavar="N",
                   help=f"the study's total of finished trials, earlier runs' included (default {tune.DEFAULT_TRIALS})")
    p.add_argument("--timeout", type=_seconds, default=tune.DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"start no trial after this long (default {tune.DEFAULT_TIMEOUT:g}, 8 hours; running "
                        "trials finish)")
    p.add_argument("--jobs", type=_count, default=1, metavar="N",
                   help="trials at once on this machine, each in its own worker, the cores split between them")
    p.add_argument("--storage", metavar="URL", help="where the study lives: sqlite:///tune.db, "
                   "postgresql://user:password@host/db, or a .journal file (default: .mnist-arch/tune.journal beside "
                   "pyproject.toml, kept out of git)")
    p.add_argument("--study", metavar="NAME", help="the study's name in the storage (default: the model's)")
    p.add_argument("--seeds", type=_seeds, default=list(tune.DEFAULT_SEEDS),
                   help="seeds the best recipe runs again, in parallel (default 0-4)")
    p.add_argument("--no-seeds", action="store_true", help="do not run the best recipe's seeds again")
    p.add_argument("--write", action="store_true", help="put the best recipe into the model's rule table in "
                   "pyproject.toml, keeping every other byte")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--data-dir", help="folder containing MNIST/raw (default: $MNIST_ARCH_DATA, else data in "
                   "[tool.mnist-arch], else the user's cache)")
    p.add_argument("--epoch-timeout", type=_seconds, metavar="SECONDS",
                   help="seconds one epoch (or the import and build) may take (default: train_timeout, 1800)")
    p.add_argument("--format", choices=("text", "json", "markdown"), default="text",
                   help="markdown: a table of the trials; json: the trials, the best recipe and its seeds "
                        "(progress goes to stderr)")


def _add_init_parser(sub) -> None:
    p = sub.add_parser("init", help="declare a model in pyproject.toml and write the GitHub workflows",
                       description="Add a [tool.mnist-arch] table for one model to ./pyproject.toml (created, or "
                                   "appended to byte for byte) and write .github/workflows/model_tests.yml, "
                                   "model_rule.yml and model_tests_comment.yml at the top of the git "
                                   "repository.")
    p.add_argument("--model", required=True, metavar="PATH.py:ATTR",
                   help="the model: PATH.py:ATTR relative to this folder, or package.module:ATTR")
    p.add_argument("--name", metavar="NAME", help="its name in the table (default: ATTR in lower case)")
    p.add_argument("--params-below", type=_count, metavar="N", help="strict budget: fewer than N parameters")
    p.add_argument("--max-params", type=_count, metavar="N", help="inclusive budget: at most N parameters")
    p.add_argument("--require", action="append", default=[], choices=FEATURES, help="a feature that must run "
                   "(repeatable)")
    p.add_argument("--require-any", action="append", default=[], metavar="F,F",
                   help="at least one of these features, e.g. gap,fc (repeatable)")
    p.add_argument("--min-accuracy", type=_min_accuracy, metavar="X",
                   help="a quick training item must reach this test accuracy: a fraction (e.g. 0.97), or auto: "
                        "train five seeds now and take the threshold rule's answer (the worst minus the spread)")
    p.add_argument("--epochs", type=_count, metavar="N", help="epochs of that training (default 1)")
    p.add_argument("--rule-threshold", type=float, metavar="X",
                   help="the course's rule, a tier of its own: the test accuracy to hold (a fraction, e.g. 0.994); "
                        "writes a [...rule] table with a usual course recipe, run by the workflow model_rule.yml")
    p.add_argument("--rule-epochs", type=_count, metavar="N", help="the rule's most epochs (default 15)")
    p.add_argument("--rule-consecutive", type=_count, metavar="K",
                   help="epochs in a row that must hold the threshold (default 3)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="for --min-accuracy auto: the folder holding MNIST/raw/ (default: $MNIST_ARCH_DATA, else "
                        "the user's cache, downloaded there when a network answers)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--action", metavar="OWNER/REPO@REF",
                        help="the workflow installs mnist-arch with its GitHub Action from that repository, pinned to "
                             "the commit of REF (a tag, branch or commit)")
    source.add_argument("--requirement", metavar="SPEC",
                        help="the workflow pip-installs SPEC as mnist-arch (e.g. mnist-arch==VERSION, or a git URL)")
    p.add_argument("--force", action="store_true",
                   help="replace the [tool.mnist-arch] table and the workflow files when they exist")
