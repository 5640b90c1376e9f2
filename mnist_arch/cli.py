"""`mnist-arch`: a thin face over the library. It parses, calls, prints; exit codes:
0 every check passed, 1 a check failed, 2 bad arguments or a model that cannot be imported, built or run.
"""

from __future__ import annotations

import argparse
import fnmatch
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


# ---------------------------------------------------------------------------------------------


def _cmd_list(args) -> int:
    from mnist_arch.project import load_project

    project = load_project()
    models = project.models if project.foreign is None else project.select(["*"])  # registered ones, to name
    for model in models:
        if fnmatch.fnmatchcase(model.name, args.pattern):
            budget = model.spec.exact_params or model.spec.max_params or model.spec.params_below
            print(f"{model.name:16} {f'{budget:,}' if budget else '-':>12} parameters declared  ({model.source})")
    return 0


def _models(args, project) -> list:
    """The models a command acts on: the NAMEs (declared in the project table, or registered), else every
    declared model unless --model was given, then each --model PATH.py:ATTR."""
    from pathlib import Path

    from mnist_arch.project import adhoc

    names = getattr(args, "names", None) or []
    targets = getattr(args, "model", None) or []
    chosen = project.select(names) if names or not targets else []
    return chosen + [adhoc(target, Path.cwd()) for target in targets]


def _cmd_summary(args) -> int:
    from mnist_arch.jobs import summarise
    from mnist_arch.project import load_project
    from mnist_arch.spec import parse_spec_fields

    project = load_project()
    model = _models(argparse.Namespace(names=[] if ":" in args.name else [args.name],
                                       model=[args.name] if ":" in args.name else []), project)[0]
    shape = args.input_shape and parse_spec_fields({"input_shape": list(args.input_shape)}, "the command line")[
        "input_shape"] or model.spec.input_shape
    rows = summarise(project, model, shape, timeout=args.timeout)
    from mnist_arch.layer_table import FORMATS

    rows = [r for r in rows if r.name.count(".") < args.depth]  # the model's row ('') always shows
    text = FORMATS[args.format](rows, model.name)
    print(text, end="" if text.endswith("\n") else "\n")
    return 0


def _check_changes(args) -> dict:
    from mnist_arch.spec import merge_changes, parse_spec_fields, read_spec_file

    from_file = read_spec_file(args.spec) if args.spec else {}
    given = {"max_params": args.max_params, "exact_params": args.exact_params, "params_below": args.params_below,
             "max_mult_adds": args.max_mult_adds, "num_classes": args.num_classes,
             "input_shape": list(args.input_shape) if args.input_shape else None,
             "require": args.require, "require_any": [group.split(",") for group in args.require_any]}
    return merge_changes(from_file, parse_spec_fields({k: v for k, v in given.items() if v}, "the command line"))


def _cmd_check(args) -> int:
    from mnist_arch.jobs import judge_all
    from mnist_arch.project import load_project
    from mnist_arch.report import FORMATS

    changes = _check_changes(args)
    project = load_project()
    if args.require_table:
        project.require_table()
    if not args.names and not args.model and project.reference_note():
        print(f"mnist-arch check: {project.reference_note()}", file=sys.stderr)
    results = judge_all(project, _models(args, project), changes, timeout=args.timeout)
    reports = [r for r in results if not isinstance(r, MnistArchError)]
    errors = [str(r) for r in results if isinstance(r, MnistArchError)]  # the others are still judged
    if reports or not errors or args.format == "json":  # JSON always parses, even when nothing was judged
        print(FORMATS[args.format](reports))
    for error in errors:
        print(f"mnist-arch check: {error}", file=sys.stderr)
    if errors:
        return 2
    return 0 if all(r.passed for r in reports) else 1


def _cmd_diff(args) -> int:
    from mnist_arch.diff import diff_against
    from mnist_arch.diff_render import FORMATS
    from mnist_arch.project import load_project

    if args.require_table:
        load_project().require_table()
    diff = diff_against(args.base, timeout=args.timeout, allow_rule_changes=args.allow_rule_changes)
    print(FORMATS[args.format](diff), end="" if args.format == "markdown" else "\n")
    return 0 if diff.passed else 1


def _cmd_badge(args) -> int:
    from mnist_arch.badge import remote_badge

    print(remote_badge(remote=args.remote))
    return 0


def _print_now(line: str) -> None:
    """One line at once, also into a pipe or a file (a CI log), where print alone would wait for the
    buffer to fill."""
    print(line, flush=True)


def _cmd_train(args) -> int:
    import json

    from mnist_arch.isolate import expect_training
    from mnist_arch.jobs import train_runs
    from mnist_arch.project import load_project
    from mnist_arch.runs import rule_table, runs_table
    from mnist_arch.work import TrainRequest

    expect_training()  # before load_project, whose registry read may start the fork server
    project = load_project()
    model = project.select([args.name])[0]
    text = args.format == "text"
    recipe = model.spec.recipes.get(args.recipe)
    if args.recipe == "rule" and recipe is None and not model.error:
        raise MnistArchError(f"{model.name} ({model.source}) declares no rule: add a [tool.mnist-arch.models."
                             f"{model.name}.rule] table with threshold, epochs and consecutive, and the recipe that "
                             "trains it (docs/rule.md).")
    if args.recipe == "rule" and (args.epochs or args.time_budget):
        raise MnistArchError(f"--tier rule judges the rule {model.source} states, within its own epochs: "
                             f"--{'epochs' if args.epochs else 'time-budget'} would change it. Change the rule "
                             "table, or train another tier (--tier quick) with it.")
    seeds = args.seed or [recipe.seed if recipe is not None else 0]  # the rule's declared seed by default

    def verdict(seed: int, result) -> None:  # as each seed's run ends
        if text:
            _print_now(f"{'PASS' if result.passed else 'FAIL'}: {model.name} ({args.recipe}, seed {seed}) "
                       f"{result.verdict()}")

    # the estimate and the epochs' lines: on stdout as text, else on stderr for a rule run (minutes long)
    say = _print_now if text else (lambda line: print(line, file=sys.stderr, flush=True)) if args.recipe == "rule" \
        else None
    request = TrainRequest(model, args.recipe, epochs=args.epochs, device=args.device, time_budget=args.time_budget,
                           data_dir=str(project.mnist_root(args.data_dir)), plots=args.plots, save=args.save,
                           threads=args.threads)
    results = train_runs(project, request, seeds, on_note=say, on_result=verdict, timeout=args.timeout)
    if args.format == "json":
        dicts = [r.to_dict() for r in results]
        print(json.dumps(dicts[0] if len(dicts) == 1 else dicts, indent=2))
    elif args.format == "markdown" and args.recipe == "rule":  # per epoch: which held the threshold
        print("\n\n".join(rule_table(r) for r in results))
    elif args.format == "markdown":
        print(runs_table(results, seeds, model.spec.recipes[args.recipe]))
    return 0 if all(r.passed for r in results) else 1


def _cmd_bench(args) -> int:
    from mnist_arch.bench_results import FORMATS, parse_path
    from mnist_arch.jobs import bench_project
    from mnist_arch.project import load_project
    from mnist_arch.work import BenchRequest

    paths = tuple(parse_path(p) for p in args.paths.split(",")) if args.paths else None  # bad path: exit 2 now
    project = load_project()
    models = _models(args, project)
    request = BenchRequest(batch_sizes=args.batch_sizes, paths=paths, device=args.device, min_time=args.min_time,
                           train=args.train, data_dir=str(project.mnist_root(args.data_dir)), weights=args.weights,
                           threads=args.threads)  # whose weights, and torch's default threads: found in a worker
    result = bench_project(project, models, request, timeout=args.timeout,
                           progress=lambda msg: print(f"bench: {msg}", file=sys.stderr, flush=True))
    if result.rows or not result.errors:
        print(FORMATS[args.format](result), end="" if args.format == "markdown" else "\n")
    for error in result.errors:
        print(f"mnist-arch bench: {error}", file=sys.stderr)
    return 2 if result.errors else 0


# --- tune (docs/tune.md) -------------------------------------------------------------------------


def _cmd_tune(args) -> int:
    import json
    from pathlib import Path

    from mnist_arch import tune
    from mnist_arch.isolate import expect_training
    from mnist_arch.project import adhoc, load_project

    tune.import_optuna()  # the extra first: without it, nothing else matters
    if args.write and args.model:
        raise MnistArchError("--write puts the recipe into the model's table in pyproject.toml; a --model "
                             "PATH.py:ATTR has none. Declare the model there (mnist-arch init), or paste the table.")
    if bool(args.name) == bool(args.model):
        raise MnistArchError("name one model: a declared NAME, or --model PATH.py:ATTR.")
    expect_training()
    project = load_project()
    model = project.select([args.name])[0] if args.name else adhoc(args.model, Path.cwd())
    rule, space = tune.what_to_tune(project, model, args.threshold, args.epochs, args.consecutive)
    settings = tune.Settings(trials=args.trials, timeout=args.timeout, jobs=args.jobs, storage=args.storage,
                             study=args.study, seeds=[] if args.no_seeds else args.seeds, device=args.device,
                             data_dir=str(project.mnist_root(args.data_dir)), epoch_timeout=args.epoch_timeout)
    def say(line: str) -> None:  # progress on stderr: stdout holds the result, in every format
        print(line, file=sys.stderr, flush=True)

    outcome = tune.Study(project, model, rule, space, settings, say).run()
    if args.format == "json":
        print(json.dumps(outcome.to_dict(), indent=2))
    elif args.format == "markdown":
        print(tune.trials_table(outcome))
        if outcome.table:
            print(f"\n```toml\n{outcome.table}\n```")
    else:
        print(tune.verdict(outcome).replace("**", ""))
        if outcome.table and not outcome.near_chance:
            print(f"\nThe recipe, as the table to paste into pyproject.toml:\n\n{outcome.table}")
    if args.write and outcome.passed:
        tune.write_rule(project.path, model.name, outcome.best["table"])
        met = sum(s["passed"] for s in outcome.seeds)
        luck = (f"; only {met} of its {len(outcome.seeds)} seeds met the rule: the recipe may have been luck"
                if outcome.seeds and met * 2 <= len(outcome.seeds) else "")
        print(f"\nmnist-arch tune: wrote the recipe into {project.path} "
              f"[tool.mnist-arch.models.{model.name}.rule]{luck}", file=sys.stderr)
    elif args.write:
        print(f"\nmnist-arch tune: --write: nothing written to {project.path}, no trial met the rule",
              file=sys.stderr)
    if isinstance(outcome.stop, _Stopped):  # a stop signal: its one line and 128 + the signal, as every command
        print(f"mnist-arch tune: the finished trials are kept in {outcome.storage}; run the same command again to "
              "continue the study.", file=sys.stderr)
        raise outcome.stop
    if outcome.interrupted:
        raise MnistArchError(f"interrupted: the finished trials are kept in {outcome.storage}; run the same command "
                             "again to continue the study.")
    return 0 if outcome.passed else 1


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction of the test set in (0, 1], e.g. 0.994, got {text!r}")
    return value


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
    p.set_defaults(func=_cmd_tune)


# --- end of tune ------------------------------------------------------------------------------


# --- init (owned by the workflows work: edit only between these markers) ----------------------


def _cmd_init(args) -> int:
    from pathlib import Path

    from mnist_arch.init import InitRequest, init_project

    rule = None
    if (args.rule_threshold, args.rule_epochs, args.rule_consecutive) != (None, None, None):
        rule = {"threshold": args.rule_threshold, "epochs": args.rule_epochs, "consecutive": args.rule_consecutive}
    request = InitRequest(model=args.model, name=args.name, params_below=args.params_below,
                          max_params=args.max_params, require=args.require,
                          require_any=[group.split(",") for group in args.require_any],
                          min_accuracy=args.min_accuracy, epochs=args.epochs, rule=rule, action=args.action,
                          requirement=args.requirement, data_dir=args.data_dir, force=args.force)
    result = init_project(Path.cwd(), request, progress=_print_now)
    print(result.report())
    return 0


def _min_accuracy(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.98, or auto, got {text!r}") from None


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
    p.set_defaults(func=_cmd_init)


# --- end of init ------------------------------------------------------------------------------


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
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("summary", help="per module: output shape, parameters, mult-adds, receptive field "
                                       "(NAME or PATH.py:ATTR)")
    p.add_argument("name")
    p.add_argument("--depth", type=_count, default=3, help="module names with fewer than N dots (default 3)")
    p.add_argument("--format", choices=("table", "json", "markdown"), default="table")
    p.add_argument("--input-shape", type=_input_shape, metavar="C,H,W")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS", help=_TIMEOUT_HELP)
    p.set_defaults(func=_cmd_summary)

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
    p.set_defaults(func=_cmd_check)

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
    p.set_defaults(func=_cmd_train)

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
    p.set_defaults(func=_cmd_diff)

    p = sub.add_parser("badge", help="the README's workflow badge, derived from the git remote")
    p.add_argument("--remote", default="origin")
    p.set_defaults(func=_cmd_badge)

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
    p.set_defaults(func=_cmd_bench)

    _add_init_parser(sub)
    _add_tune_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except MnistArchError as exc:
        print(f"mnist-arch {args.command}: {exc}", file=sys.stderr)
        return 2


def _quiet_on_closed_pipe(func: Callable[[], int]) -> int:
    """`func()`'s exit code, or 141 when the reader of stdout went away first (`mnist-arch diff --format json |
    head -40`): no traceback, and no "Exception ignored" from the flush at exit, for which stdout is pointed at
    /dev/null. 141 is what a shell reports for a writer ended by SIGPIPE (`yes | head`): under `set -o pipefail`
    a cut-short output is not mistaken for a verdict (the verdict itself was not all written)."""
    import os

    try:
        try:
            return func()
        finally:  # also on SystemExit (--help, --version): the last lines may still sit in the buffer
            sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 141


# --- stop signals: a stopped command leaves no model running ------------------------------------


class _Stopped(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM or SIGINT (`_stop_on_signals`): a KeyboardInterrupt, so that code
    which cleans up on Ctrl-C (tune marks its running trials failed) does so for either signal."""


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT, sent to this process alone too, stop the command at once: every worker is killed
    with whatever its model started (isolate.stop_all), and `run` says so in one line, exit 128 + the signal
    (143, 130). A second signal while it stops kills again and changes nothing else. A signal ignored when
    the command started (SIGINT in a shell's background job) stays ignored."""
    import signal

    from mnist_arch.isolate import stop_all

    def stop(signum, _frame):
        stop_all()
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, lambda *_: stop_all())
        raise _Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # as Python does: a background job ignores Ctrl-C
            signal.signal(signum, stop)


def _exit_stopped(stopped: _Stopped) -> None:
    """The one line, then the end: 128 + the signal, as a shell reports a process the signal ended. No
    interpreter shutdown (a second or more with torch loaded, as `bench` has it): what needed cleaning up
    (each worker, a temporary folder) was cleaned up as the exception left its `with` block."""
    import os
    import signal

    signum = stopped.args[0]
    try:  # its reader may be gone (the base check of a `diff` that was killed)
        print(f"mnist-arch: stopped by {signal.Signals(signum).name}, and every model it was running with it.",
              file=sys.stderr)
    except (OSError, ValueError):
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(128 + signum)


def run() -> None:
    """Console-script entry point."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads anywhere: see mnist_arch._forkserver
    _stop_on_signals()
    try:
        code = _quiet_on_closed_pipe(main)
    except _Stopped as stopped:
        _exit_stopped(stopped)
    sys.exit(code)


if __name__ == "__main__":
    run()
