"""`mnist-arch`: a thin face over the library. It parses, calls, prints; exit codes:
0 every check passed, 1 a check failed, 2 bad arguments or a model that cannot be imported, built or run.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections.abc import Callable

from mnist_arch.errors import MnistArchError

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
    from mnist_arch.layer_rows import FORMATS

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
    from mnist_arch.isolate import Stopped, expect_training
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
        ran = [s for s in outcome.seeds if not s.get("error")]
        met = sum(s["passed"] for s in ran)
        luck = (f"; only {met} of its {len(ran)} seeds met the rule: the recipe may have been luck"
                if ran and met * 2 <= len(ran) else "")
        print(f"\nmnist-arch tune: wrote the recipe into {project.path} "
              f"[tool.mnist-arch.models.{model.name}.rule]{luck}", file=sys.stderr)
    elif args.write:
        print(f"\nmnist-arch tune: --write: nothing written to {project.path}, no trial met the rule",
              file=sys.stderr)
    if isinstance(outcome.stop, Stopped):  # a stop signal: its one line and 128 + the signal, as every command
        print(f"mnist-arch tune: the finished trials are kept in {outcome.storage}; run the same command again to "
              "continue the study.", file=sys.stderr)
        raise outcome.stop
    if outcome.interrupted:
        raise MnistArchError(f"interrupted: the finished trials are kept in {outcome.storage}; run the same command "
                             "again to continue the study.")
    return 0 if outcome.passed else 1


# --- init (docs/ci.md) -------------------------------------------------------------------------


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


#: Each command's function, by the name `cli_parser.build_parser` gives it.
COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "list": _cmd_list, "summary": _cmd_summary, "check": _cmd_check, "train": _cmd_train, "diff": _cmd_diff,
    "badge": _cmd_badge, "bench": _cmd_bench, "init": _cmd_init, "tune": _cmd_tune}


def main(argv: list[str] | None = None) -> int:
    from mnist_arch.cli_parser import build_parser

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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


def _stop_on_signals() -> None:
    """SIGTERM and SIGINT, sent to this process alone too, stop the command at once: every worker is killed
    with whatever its model started (isolate.stop_all), and `run` says so in one line, exit 128 + the signal
    (143, 130). A second signal while it stops kills again and changes nothing else. A signal ignored when
    the command started (SIGINT in a shell's background job) stays ignored."""
    import signal

    from mnist_arch.isolate import Stopped, stop_all

    def stop(signum, _frame):
        stop_all()
        for each in (signal.SIGTERM, signal.SIGINT):
            signal.signal(each, lambda *_: stop_all())
        raise Stopped(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # as Python does: a background job ignores Ctrl-C
            signal.signal(signum, stop)


def _exit_stopped(stopped) -> None:
    """The one line, then the end: 128 + the signal, as a shell reports a process the signal ended. No
    interpreter shutdown (a second or more with torch loaded, as `bench` has it): what needed cleaning up
    (each worker, a temporary folder) was cleaned up as the exception left its `with` block."""
    import os
    import signal

    signum = stopped.signum
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
    from mnist_arch.isolate import Stopped

    _stop_on_signals()
    try:
        code = _quiet_on_closed_pipe(main)
    except Stopped as stopped:
        _exit_stopped(stopped)
    sys.exit(code)


if __name__ == "__main__":
    run()
