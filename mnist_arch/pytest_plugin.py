"""pytest plugin (entry point pytest11): a project that declares its models in `pyproject.toml` gets one
test per declared fact from a plain `pytest`.

    [tool.mnist-arch]
    data = "data"                     # optional: the folder holding MNIST/raw/, for training items
    [tool.mnist-arch.models.tiny]
    model = "models/tiny.py:Net"      # PATH.py:ATTR (relative to pyproject.toml) or package.module:ATTR
    max_params = 20000                # any spec field (see mnist_arch.spec)
    require = ["batchnorm", "dropout"]
    [tool.mnist-arch.models.tiny.train]
    min_accuracy = 0.95               # optional quick training threshold, an item marked `training`
    epochs = 1
    [tool.mnist-arch.models.tiny.rule]
    threshold = 0.994                 # optional: a course's rule, an item marked `rule` (docs/rule.md),
    epochs = 15                       # deselected unless asked for: `pytest -m rule`
    consecutive = 3

collects `pyproject.toml::tiny::params.max`, `pyproject.toml::tiny::require.batchnorm`, ... and
`pyproject.toml::tiny::train.min_accuracy`, `pyproject.toml::tiny::rule`, and with pytest-benchmark
`pyproject.toml::tiny::forward[64]`.
The table is read by `mnist_arch.project` (the same reader as the command line). Collection builds no model:
the items follow from the declarations (`Spec.check_ids`), and each model is judged once per process (per xdist
worker), in an isolated worker (`mnist_arch.isolate`), when the first of its items runs; each item reports its
check's message, and `NAME::load` the model's loading and the checks it adds (a lint on its output).
A plain `pytest` runs the forward items once, untimed; `--benchmark-only` or `--benchmark-enable` times them.

Which runs collect the items: every run that names no single test. pyproject.toml is added to the paths
pytest collects, so `pytest`, `pytest tests/` and `pytest test_model.py` all judge the declared models;
`pytest path::test_name` (a node id) does not, and the terminal summary then says the table's items were
not collected and how to run them (`pytest pyproject.toml`).

This module is imported by every pytest run of anyone who installs mnist-arch, so it imports neither
torch nor the engine at import time; they load when a `[tool.mnist-arch]` table is found.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest


class MnistArchLintWarning(UserWarning):
    """A lint the engine reports without failing the model (e.g. a softmax output)."""


def pytest_addoption(parser):
    group = parser.getgroup("mnist-arch", "mnist-arch: compliance tests from [tool.mnist-arch] in pyproject.toml")
    group.addoption("--mnist-arch-data", metavar="DIR", default=None,
                    help="folder containing MNIST/raw/ for the training items (default: $MNIST_ARCH_DATA, "
                         "else `data` in [tool.mnist-arch])")
    group.addoption("--mnist-arch-rule", action="store_true", default=False,
                    help="run the rule items (marker `rule`: a course's rule, up to its epochs of training, "
                         "docs/rule.md), which a plain pytest deselects; `-m rule` runs them alone")


def _project_file(config) -> Path | None:
    """The pyproject.toml with a [tool.mnist-arch] table that `mnist-arch` run here would read (the same
    search: the nearest upwards from where pytest was started)."""
    from mnist_arch.errors import MnistArchError
    from mnist_arch.project import find_pyproject  # plain data and tomllib: no torch

    try:
        return find_pyproject(config.invocation_params.dir)
    except MnistArchError:
        return None  # a pyproject.toml that does not parse: not ours to report; the build tool will


def pytest_configure(config):
    config.addinivalue_line("markers", "training: trains on real MNIST (needs the data; see README)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "rule: a declared course rule, many epochs of training; deselected unless "
                                       "asked for (pytest -m rule, or --mnist-arch-rule)")
    config._mnist_arch = _STATE["current"] = {"file": _project_file(config), "collected": False, "training": []}
    table = config._mnist_arch["file"]
    if table is not None:
        _stop_on_sigterm(config)
    if table is None or any("::" in arg for arg in config.args):
        return  # no table, or single tests were selected by node id
    folder = table.parent.resolve()

    def covers(arg: str) -> bool:  # a path pytest walks that reaches the table anyway
        path = (config.invocation_params.dir / arg).resolve()
        return path == table.resolve() or (path.is_dir() and (path == folder or path in folder.parents))

    if not any(covers(arg) for arg in config.args):
        config.args.append(str(table))


def pytest_collection_modifyitems(config, items):
    """The `gpu` marker keeps its promise: such a test is skipped where PyTorch sees no CUDA device, through
    pytest's own skip marker, so the report names the test (torch is imported only when a test is marked).
    The `rule` items are deselected unless asked for: by --mnist-arch-rule, or by a -m expression that names
    `rule` (then pytest's own -m selects them): a plain `pytest` must stay quick where no addopts say so."""
    if not _rule_asked(config):
        rule = [item for item in items if item.get_closest_marker("rule") is not None]
        if rule:
            config.hook.pytest_deselected(items=rule)
            items[:] = [item for item in items if item.get_closest_marker("rule") is None]
    marked = [item for item in items if item.get_closest_marker("gpu") is not None]
    if marked:
        import torch

        if not torch.cuda.is_available():
            skip = pytest.mark.skip(reason=f"marked gpu, and this PyTorch ({torch.__version__}) sees no CUDA device")
            for item in marked:
                item.add_marker(skip)


def _rule_asked(config) -> bool:
    """Whether this run asked for the `rule` items: --mnist-arch-rule, or a -m expression naming `rule`."""
    import re

    return bool(config.getoption("mnist_arch_rule", False)
                or "rule" in re.findall(r"\w+", config.option.markexpr or ""))


def pytest_collect_file(file_path: Path, parent):
    state = getattr(parent.config, "_mnist_arch", None)
    if not state or state["file"] is None or file_path.resolve() != state["file"].resolve():
        return None  # only the project's own pyproject.toml, not one of a vendored package
    return ComplianceFile.from_parent(parent, path=file_path)


def pytest_collection_finish(session):
    """The table's items that collection kept (after -k and -m) were collected, whether they then run or not
    (`--collect-only` lists them and runs none). An xdist controller collects nothing: there the reports below
    say it."""
    state = _STATE.get("current")
    if state is not None and state["file"] is not None and any(
            item.nodeid.split("::")[0].endswith("pyproject.toml") for item in session.items):
        state["collected"] = True


def pytest_runtest_logreport(report):
    """Seen for every item, also on an xdist controller for its workers' items: which of the table's items
    ran, and the training items' accuracy for the terminal summary."""
    state = _STATE.get("current")
    if state is None or state["file"] is None or not report.nodeid.split("::")[0].endswith("pyproject.toml"):
        return
    state["collected"] = True
    if report.when == "call":
        state["training"] += [value for key, value in report.user_properties if key == "mnist_arch_training"]


def _stop_on_sigterm(config) -> None:
    """In a run whose project declares models: SIGTERM, to pytest's PID alone too, kills every worker (with what
    its model started) and every xdist worker of this run, and stops pytest as Ctrl-C does; a second SIGTERM ends
    it at once. Only where SIGTERM still has its default action (nobody else handles it) and pytest runs in the
    main thread; `pytest_unconfigure` puts the default back. An xdist worker also gets SIGTERM when its
    controller dies, SIGKILL included (Linux). docs/stopping.md."""
    import signal
    import threading

    from mnist_arch.isolate import Stopped, end_with_parent, stop_all

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return

    def stop(signum, _frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        stop_all()
        config._mnist_arch["stopped"] = signum
        # pytest's own Ctrl-C path runs (fixture teardown, its summary, --junitxml) and shows this line; exit 143
        raise Stopped(signum, "pytest stopped by SIGTERM, and every model it was running with it")

    signal.signal(signal.SIGTERM, stop)
    config._mnist_arch["sigterm"] = stop
    if hasattr(config, "workerinput"):
        end_with_parent(signal.SIGTERM)


def pytest_keyboard_interrupt(excinfo):
    """Ctrl-C or SIGTERM (`Stopped`) on an xdist controller, also sent to its PID alone: its workers get SIGTERM now
    (`_stop_on_sigterm` there), not after the 5 s execnet's shutdown waits for them before it interrupts them."""
    import signal

    state = _STATE.get("current")
    if state is None or state["file"] is None:
        return
    for pid in _xdist_workers():
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            pass


def _xdist_workers() -> list[int]:
    """This process's children that are xdist workers (execnet's popen gateways: their command line is its
    bootstrap line), from /proc on Linux; none elsewhere."""
    try:
        from execnet.gateway_io import popen_bootstrapline
    except ImportError:
        return []
    from mnist_arch.proc import children, command_line

    return [pid for pid in children().get(os.getpid(), ()) if popen_bootstrapline.encode() in command_line(pid)]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """A run stopped by SIGTERM exits 128 + 15, as a shell reports a process the signal ended."""
    state = getattr(session.config, "_mnist_arch", None)
    if state and state.get("stopped"):
        session.exitstatus = 128 + state["stopped"]


def pytest_unconfigure(config):
    import signal

    state = getattr(config, "_mnist_arch", None)
    if state and state.get("sigterm") is not None and signal.getsignal(signal.SIGTERM) is state["sigterm"]:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


_STATE: dict = {}  # the run's state (one pytest run per process), read by the hooks above and below


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, "_mnist_arch", None)
    if state and state.get("training"):
        terminalreporter.section("mnist-arch training")
        for line in state["training"]:
            terminalreporter.write_line(line)
    if state and state["file"] is not None and not state["collected"]:
        from mnist_arch.project import TABLE

        terminalreporter.write_line(
            f"mnist-arch: {state['file']} declares models in [{TABLE}], but this run did not collect their "
            "items (single tests were selected, or they were deselected). Run `pytest pyproject.toml` (or a "
            "plain `pytest`) to judge them.",
            yellow=True)


# ---------------------------------------------------------------------------------------------
# Collection


class ComplianceFile(pytest.File):
    """pyproject.toml: one ModelNode per [tool.mnist-arch.models.NAME]. Collecting builds no model: the items come
    from the declarations, and each model is judged when the first of its items runs (`verdict`)."""

    def collect(self):
        from mnist_arch.errors import MnistArchError
        from mnist_arch.isolate import expect_training
        from mnist_arch.paths import mnist_root
        from mnist_arch.project import parse_project, read_table, table_data, table_may_train

        try:
            table = read_table(self.path)
            # where MNIST is, read before the table is parsed: parsing may start the fork server
            self.data_root = mnist_root(self.config.getoption("mnist_arch_data"), table_data(self.path, table))
            if table_may_train(table, _rule_asked(self.config)) and not _training_unavailable(self.data_root):
                expect_training()  # before parse_project, whose registry read may start the fork server
            self.project = parse_project(self.path, table)
        except MnistArchError as exc:
            raise self.CollectError(str(exc)) from None
        self.verdicts: dict = {}  # model name -> its checks.Report or the MnistArchError that stopped it
        for model in self.project.models:
            yield ModelNode.from_parent(self, name=model.name, model=model)

    def verdict(self, model):
        """`model`'s verdict, judged once per process (per xdist worker) when the first of its items asks. The
        first ask in a run without xdist judges, two at a time, every model whose items this run kept."""
        if model.name not in self.verdicts:
            from mnist_arch.jobs import judge_all

            wanted = [model]
            if not hasattr(self.config, "workerinput"):  # an xdist worker runs only some of the items
                kept = {item.parent.name for item in self.session.items if item.parent.parent is self}
                wanted += [m for m in self.project.models if m.name in kept and m.name not in self.verdicts
                           and m is not model and not m.error]
            self.verdicts.update(zip((m.name for m in wanted), judge_all(self.project, wanted), strict=True))
        return self.verdicts[model.name]


class ModelNode(pytest.Collector):
    """One declared model: a `load` item (it loads, builds and runs; the checks its declaration does not name, such
    as a lint on its output, report there), one item per declared check, training and benchmark items."""

    def __init__(self, name: str, parent, model) -> None:
        super().__init__(name=name, parent=parent)
        self.model = model
        self.lineno = model.line

    def collect(self):
        if self.model.error:  # the declaration itself is wrong: no model to judge
            yield ProblemItem.from_parent(self, name="load", message=self.model.error)
            return
        yield LoadItem.from_parent(self, name="load")
        for check_id in self.model.spec.check_ids():
            yield CheckItem.from_parent(self, name=check_id, check_id=check_id)
        missing = _training_unavailable(self.parent.data_root)
        for recipe, cls, name, marker in (("quick", TrainingItem, "train.min_accuracy", pytest.mark.training),
                                          ("rule", RuleItem, "rule", pytest.mark.rule)):
            if recipe in self.model.spec.recipes:
                item = cls.from_parent(self, name=name)
                item.add_marker(marker)
                if missing:
                    item.add_marker(pytest.mark.skip(reason=missing))
                yield item
        if self.config.pluginmanager.hasplugin("benchmark"):
            for batch in self.parent.project.bench_batch_sizes:
                yield pytest.Function.from_parent(self, name=f"forward[{batch}]", callobj=_forward_benchmark,
                                                  keywords={"mnist_arch_batch": batch})

    def report(self, asking: pytest.Item):
        """The model's checks.Report, for an item of it. Where the model could not be judged, the `load` item
        fails with the paragraph; the other items skip when that `load` item is in this run (one failure per
        broken model, as a module that does not import is one error), else each fails with it."""
        from mnist_arch.errors import MnistArchError

        verdict = self.parent.verdict(self.model)
        if not isinstance(verdict, MnistArchError):
            return verdict
        load = f"{self.nodeid}::load"
        if asking.name != "load" and any(item.nodeid == load for item in asking.session.items):
            pytest.skip(f"not judged: {self.name} could not be loaded, built or run (see {load})")
        if isinstance(asking, _Item):
            raise ComplianceFailure(str(verdict))
        pytest.fail(str(verdict), pytrace=False)


# ---------------------------------------------------------------------------------------------
# Items


class ComplianceFailure(Exception):
    """A declared fact that does not hold; reported as its message alone."""


class _Item(pytest.Item):
    def reportinfo(self):
        # The line of the model's table, and the failure header. Not "model::check": pytest would print
        # a header that ends the node id with its dots as "::", as for a Python name (params::max).
        return self.path, self.parent.lineno, f"{self.parent.name}: {self.name}"

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, ComplianceFailure):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)


class LoadItem(_Item):
    """The model loads, builds and runs; the checks its declaration does not name (params.stable, a lint on its
    output) report here."""

    def runtest(self):
        declared = set(self.parent.model.spec.check_ids())
        extra = [check for check in self.parent.report(self).checks if check.id not in declared]
        _report_checks(self.parent.name, extra)


class CheckItem(_Item):
    def __init__(self, name: str, parent, check_id: str) -> None:
        super().__init__(name=name, parent=parent)
        self.check_id = check_id

    def runtest(self):
        checks = [check for check in self.parent.report(self).checks if check.id == self.check_id]
        if not checks:
            raise ComplianceFailure(f"mnist-arch's engine made no {self.check_id!r} check of {self.parent.name}, "
                                    "which its declaration asks for: an error of mnist-arch, not of the model")
        _report_checks(self.parent.name, checks)


def _report_checks(name: str, checks) -> None:
    for check in checks:
        if check.warning:
            warnings.warn(MnistArchLintWarning(f"{name}: {check.message}"), stacklevel=1)
    failed = [check.message for check in checks if not check.passed]
    if failed:
        raise ComplianceFailure("\n".join(failed))


class ProblemItem(_Item):
    """A model whose declaration is invalid or that cannot be loaded, built or run: one failure."""

    def __init__(self, name: str, parent, message: str) -> None:
        super().__init__(name=name, parent=parent)
        self.message = message

    def runtest(self):
        raise ComplianceFailure(self.message)


class TrainingItem(_Item):
    """Trains the model with its quick recipe (in an isolated worker) and compares the test accuracy with
    the declared threshold. The accuracy reached and the seconds taken are reported, passing or not."""

    def runtest(self):
        from mnist_arch.errors import MnistArchError
        from mnist_arch.jobs import train_runs
        from mnist_arch.work import TrainRequest

        node, table = self.parent, self.parent.parent
        final_activation = node.report(self).final_activation  # the loss follows the model's output
        try:
            (result,) = train_runs(table.project, TrainRequest(node.model, "quick", final_activation,
                                                               data_dir=str(table.data_root)))
        except MnistArchError as exc:
            raise ComplianceFailure(str(exc)) from None
        default = " (the default for its output)" if node.model.loss is None else ""
        summary = f"{result.verdict()}; loss {result.loss}{default}"
        self.user_properties.append(("mnist_arch_training", f"{node.name}: {summary}"))
        if not result.passed:
            raise ComplianceFailure(summary)


class RuleItem(_Item):
    """The course's rule (`[...models.NAME.rule]`, docs/rule.md): the declared recipe, its declared seed, up to
    its epochs, judged by `runs.judge_rule`. Its estimate and each epoch's line are written to the terminal as
    they come, past pytest's capture (under pytest-xdist, whose workers have no terminal, they are in the
    item's report section instead: `pytest -rA` shows them); the verdict is in the terminal summary."""

    def _say(self, lines: list[str]):
        reporter = None if hasattr(self.config, "workerinput") else self.config.pluginmanager.getplugin(
            "terminalreporter")
        capture = self.config.pluginmanager.getplugin("capturemanager")

        def say(line: str) -> None:
            lines.append(line)
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():
                    reporter.write_line(f"mnist-arch rule: {line}")
        return say

    def runtest(self):
        from mnist_arch.errors import MnistArchError
        from mnist_arch.jobs import train_runs
        from mnist_arch.work import TrainRequest

        node, table = self.parent, self.parent.parent
        final_activation = node.report(self).final_activation  # the loss follows the model's output
        seed = node.model.spec.recipes["rule"].seed  # the declared seed: the student's run is what is graded
        lines: list[str] = []
        try:
            (result,) = train_runs(table.project, TrainRequest(node.model, "rule", final_activation,
                                                               data_dir=str(table.data_root)),
                                   (seed,), on_note=self._say(lines))
        except MnistArchError as exc:
            raise ComplianceFailure(str(exc)) from None
        finally:
            self.add_report_section("call", "mnist-arch rule", "\n".join(lines))
        self.user_properties.append(("mnist_arch_training", f"{node.name}: {result.verdict()}"))
        if not result.passed:
            raise ComplianceFailure(result.verdict())


def _training_unavailable(root: Path | None) -> str | None:
    """Why a training item cannot run here (skipped at collection), or None."""
    from mnist_arch.paths import DATA_ENV
    from mnist_arch.project import TABLE

    if root is None or not (root / "MNIST" / "raw").is_dir():
        return (f"no MNIST copy{f' at {root}/MNIST/raw' if root else ''}: pass --mnist-arch-data DIR, set "
                f"{DATA_ENV}, or set data = \"DIR\" in [{TABLE}] (DIR must contain MNIST/raw/)")
    return None


def _forward_benchmark(benchmark, request):
    """Forward throughput of a declared model at one batch size, timed by pytest-benchmark. The model runs
    in an isolated worker; each timed call runs enough forward passes there (at least 64 images) that the
    round trip to the worker is a small part of it, and `extra_info` holds images per second."""
    from mnist_arch.errors import MnistArchError
    from mnist_arch.jobs import forward_repeats, worker_for
    from mnist_arch.work import ForwardRequest

    node = request.node.parent
    project = node.parent.project
    node.report(request.node)  # a model that cannot be judged: the paragraph (or a skip beside its `load` item)
    batch = request.node.keywords["mnist_arch_batch"]
    repeats = forward_repeats(batch)
    broken = None
    try:
        with worker_for(project, node.model) as worker:
            worker.call("load_for_forward", ForwardRequest(node.model, batch))
            if not _timing_asked(request.config):  # a plain `pytest`: one untimed call, as a smoke test, and no
                benchmark.disabled = True  # table (pytest-benchmark's own switch, as --benchmark-disable sets it)
            benchmark(worker.call, "run_forwards", repeats)
    except MnistArchError as exc:  # the model broke in its worker: its paragraph, not a traceback of ours
        broken = str(exc)
    if broken is not None:
        pytest.fail(broken, pytrace=False)
    benchmark.extra_info.update({"model": node.name, "batch_size": batch, "forwards_per_call": repeats})
    stats = getattr(benchmark, "stats", None)
    median = getattr(getattr(stats, "stats", None), "median", None)
    if median:
        benchmark.extra_info["images_per_s"] = round(batch * repeats / median, 1)


def _timing_asked(config) -> bool:
    """Whether this run asked pytest-benchmark for timings: `--benchmark-only` or `--benchmark-enable`, or a place
    to keep them (`--benchmark-json`, `--benchmark-save`, `--benchmark-autosave`). A plain `pytest` runs each forward
    item once, untimed, so that no one-round table is printed that nobody asked for."""
    return any(config.getoption(option, None) for option in (
        "benchmark_only", "benchmark_enable", "benchmark_json", "benchmark_save", "benchmark_autosave"))
