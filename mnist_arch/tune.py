"""`mnist-arch tune`: the cheapest recipe that meets a model's rule, searched with Optuna (docs/tune.md). The
command's one entry (`Study`, with the names `cli._cmd_tune` uses), and the study loop.

A study is a set of trials; each trial is one rule-tier run (`remote.trial`, in an isolated worker as
every training run is) of a recipe drawn from the search space. The parent process (this module) owns the
Optuna study: it draws each trial's recipe, receives the run's epochs on the worker's pipe, reports them to
the pruner and stops the worker when the trial is pruned. Nothing here imports torch. The jobs around it:

- `tune_space`: the search space, the rule table to tune for, a trial's recipe;
- `tune_storage`: where the study lives (a journal beside pyproject.toml, `--storage URL`), the study opened and
  checked to be the same search, trial owners, stale trials, the heartbeat, the claim lock;
- `tune_trial`: a trial's score (the objective, minimised: the fewest epochs that meet the rule, then the highest
  accuracy held), why it is pruned at once, and the function its worker runs;
- `tune_report`: the outcome, the table to paste, the trials table, the verdict; `tune_write`: `--write`.

**Trials**: `--trials` is the study's total of finished (complete or pruned) trials, whoever ran them: a trial is
claimed under a lock (a file lock beside the journal) and, where the storage is shared with other machines,
checked again by its number, so N workers on one study finish exactly `--trials`. A trial that fails in a way
no recipe can fix (the model's own code, its build: `remote.recipe_may_fix`) stops the study at once with
its error; other failures stop it after MAX_FAILS_IN_A_ROW in a row.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError
from mnist_arch.runs import Epoch, duration, in_a_row, judge_rule
from mnist_arch.tune_report import Outcome, outcome_of, trials_table, verdict
from mnist_arch.tune_space import fixed_fields, model_with, recipe_of, rule_fields, trial_table, what_to_tune
from mnist_arch.tune_storage import (
    claim_lock,
    fail_stale,
    heartbeat,
    import_optuna,
    model_code,
    open_storage,
    open_study,
    owner,
)
from mnist_arch.tune_trial import Pruned, prune_reason, score
from mnist_arch.tune_write import write_rule
from mnist_arch.work import NO_RECIPE_FIXES

if TYPE_CHECKING:
    from mnist_arch.project import Project
    from mnist_arch.runs import TrainResult
    from mnist_arch.work import Declared, TrainRequest

#: What `cli._cmd_tune` calls, besides `Study` and `Settings`.
__all__ = ["DEFAULT_SEEDS", "DEFAULT_TIMEOUT", "DEFAULT_TRIALS", "Outcome", "Settings", "Study", "import_optuna",
           "trials_table", "verdict", "what_to_tune", "write_rule"]

#: Defaults of the command line (docs/tune.md says why).
DEFAULT_TRIALS = 30
DEFAULT_TIMEOUT = 8 * 3600.0
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
#: Trials in a row of one run that may fail (not pruned: an error a recipe may fix) before the run stops with it.
MAX_FAILS_IN_A_ROW = 3


@dataclass
class Settings:
    """The command line's settings of one run of a study."""

    trials: int = DEFAULT_TRIALS
    timeout: float = DEFAULT_TIMEOUT
    jobs: int = 1
    storage: str | None = None
    study: str | None = None  # default: the model's name
    seeds: Sequence[int] = DEFAULT_SEEDS
    device: str = "auto"
    data_dir: str | None = None
    epoch_timeout: float | None = None


class Study:
    """One `mnist-arch tune` run on one study: claims trials until the study has its total, runs each in a
    worker, then re-runs the best recipe's seeds."""

    def __init__(self, project: Project, model: Declared, base: Mapping[str, Any], space: Mapping[str, Any],
                 settings: Settings, say: Callable[[str], None]) -> None:
        self.optuna = import_optuna()
        self.project, self.model, self.base, self.space, self.settings, self.say = \
            project, model, dict(base), space, settings, say
        self.recipe = recipe_of(project, model, self.base)
        self.rule = rule_fields(self.recipe)
        self.storage, self.lock_path, self.where = open_storage(self.optuna, settings.storage, project.root)
        name = settings.study or model.name
        identity = {"rule": self.rule, "fixed": fixed_fields(self.base, self.recipe),
                    "model": model_code(model, project.root)}
        self.study = open_study(self.optuna, self.storage, name, self.where, identity, model.source)
        self.name = name
        self._lock = threading.Lock()  # claims, and the state below
        self._workers: set[Any] = set()
        self._stop = threading.Event()  # no trial starts: interrupted, or the search gave up
        self._halted = threading.Event()  # interrupted: the running workers are killed
        self._started = time.monotonic()
        self._fails_in_a_row = 0
        self._error: str | None = None
        self.final_activation: str | None = None
        from mnist_arch.runs import available_cores

        self.cores = available_cores()
        # Threads split between the trials that run at once; one trial alone: machine.choose_threads decides.
        self.threads = max(1, self.cores // settings.jobs) if settings.jobs > 1 else None

    # --- claiming

    def _counted(self) -> tuple:
        state = self.optuna.trial.TrialState
        return (state.COMPLETE, state.PRUNED, state.RUNNING, state.WAITING)

    def finished(self) -> list:
        state = self.optuna.trial.TrialState
        return self.study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED))

    def claim(self):
        """A new trial, or None once the study has its total (or this run's time is up)."""
        if self._stop.is_set() or time.monotonic() - self._started > self.settings.timeout:
            return None
        with claim_lock(self.lock_path, self._lock):
            fail_stale(self.optuna, self.study, self.storage)
            if len(self.study.get_trials(deepcopy=False, states=self._counted())) >= self.settings.trials:
                return None
            trial = self.study.ask()
            trial.set_user_attr("owner", owner())
        # Another machine may have claimed at the same moment (no lock spans machines): the trial numbers
        # say who was first.
        earlier = [t for t in self.study.get_trials(deepcopy=False, states=self._counted()) if t.number < trial.number]
        if len(earlier) >= self.settings.trials:
            trial.set_user_attr("reason", "not run: the study had its trials")
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return None
        return trial

    # --- running

    def run(self) -> Outcome:
        """The study's trials until it has its total (or the time is up), then the best recipe's seeds. Ctrl-C
        kills the running workers and marks their trials failed; the outcome then says it was interrupted."""
        from mnist_arch.jobs import judge

        try:
            if self.model.loss is None:  # once, for every trial: the loss follows the model's output
                self.final_activation = judge(self.project, self.model).final_activation
            failed = fail_stale(self.optuna, self.study, self.storage)
            if failed:
                self.say(f"tune {self.name}: trial(s) {', '.join(map(str, failed))} failed: their process ended "
                         "before they did (a kill, a cancelled job); the finished trials are kept")
            self.say(f"tune {self.name}: study in {self.where}, {len(self.finished())} of {self.settings.trials} "
                     f"trials finished; up to {self.settings.jobs} at once, {self.threads or 'chosen'} thread(s) "
                     f"each; stops after {duration(self.settings.timeout)} (optuna-dashboard opens the study: "
                     "docs/tune.md)")
            self._parallel(self._loop, [()] * self.settings.jobs)
            if self._error is not None:
                raise MnistArchError(self._error)
            outcome = self.outcome()
            if outcome.passed and self.settings.seeds:
                outcome.seeds = self.rerun_seeds(outcome.best)
            return outcome
        except KeyboardInterrupt as stop:  # Ctrl-C, and the command line's stop signals (SIGTERM, SIGINT)
            outcome = self.outcome()
            outcome.interrupted, outcome.stop = True, stop
            return outcome
        except Exception as exc:  # the storage went away mid-study (a database restarted, a disk filled up)
            if not type(exc).__module__.startswith(("optuna", "sqlalchemy", "psycopg")):
                raise
            self._halt()
            raise MnistArchError(f"The study's storage {self.where} failed: {type(exc).__name__}: "
                                 f"{(str(exc).splitlines() or [''])[0]}. The finished trials are kept there; run the "
                                 "same command again once it answers.") from None

    def _parallel(self, func: Callable, calls: Sequence[tuple]) -> list:
        """func(*args) for each of `calls` in threads, at most `jobs` (or as many calls) at once; on Ctrl-C the
        running workers are killed first, so that no thread waits for a trial to end."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
            futures = [pool.submit(func, *args) for args in calls]
            try:
                return [future.result() for future in futures]
            except KeyboardInterrupt:
                self._halt()
                for future in futures:
                    future.exception()
                raise

    def _call(self, model: Declared, job: str, request: TrainRequest,
              on_note: Callable[[Any], None] | None = None) -> Any:
        """The job of `mnist_arch.remote` named `job` with `request`, in a training worker of the model's
        (`jobs.worker_for`), which Ctrl-C can kill."""
        from mnist_arch.jobs import worker_for

        with worker_for(self.project, model, training=True, timeout=self.settings.epoch_timeout,
                        on_note=on_note) as worker:
            with self._lock:
                self._workers.add(worker)
            try:
                if self._stop.is_set():
                    raise MnistArchError("interrupted before it started")
                return worker.call(job, request)
            except Pruned:
                worker.close(kill=True)  # now: the worker is mid-epoch and would not answer a polite close
                raise
            finally:
                with self._lock:
                    self._workers.discard(worker)

    def _halt(self) -> None:
        """Stop: no trial starts, and the running ones' workers are killed (their trials end "interrupted")."""
        self._halted.set()
        self._stop.set()
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.close(kill=True)

    def _loop(self) -> None:
        from mnist_arch.isolate import is_stopping

        while not self._stop.is_set() and not is_stopping():
            trial = self.claim()
            if trial is None:
                return
            self.run_trial(trial)

    def run_trial(self, trial) -> None:
        from mnist_arch.work import TrainRequest

        state = self.optuna.trial.TrialState
        try:
            table = trial_table(self.base, trial, self.space, self.rule["epochs"])
        except ValueError as exc:  # Optuna refuses a parameter it knows otherwise in this study
            trial.set_user_attr("reason", f"the search space does not fit this study: {exc}")
            self.study.tell(trial, state=state.FAIL)
            with self._lock:
                self._error = (f"The search space does not fit the study {self.name!r} in {self.where} (Optuna: "
                               f"{exc}). Give this search a name of its own: --study NAME.")
                self._stop.set()
            return
        trial.set_user_attr("table", table)
        history: list[Epoch] = []
        unfixable: list[bool] = []  # the worker's NO_RECIPE_FIXES note, before its error
        try:
            model = model_with(self.project, self.model, table)
        except MnistArchError as exc:  # a space the table widened beyond what a recipe may be
            trial.set_user_attr("reason", str(exc))
            self.study.tell(trial, state=state.FAIL)
            self._failed(str(exc))
            return

        def on_note(value: Any) -> None:
            if isinstance(value, tuple) and value[:1] == ("pid",):
                trial.set_user_attr("worker_pid", value[1])
            if value == NO_RECIPE_FIXES:
                unfixable.append(True)
            if not isinstance(value, Epoch):
                return
            history.append(value)
            trial.report(1 - value.test_accuracy if math.isfinite(value.test_accuracy) else 1.0, value.epoch)
            trial.set_user_attr("accuracies", [e.test_accuracy for e in history])
            self.progress(trial.number, history)
            reason = prune_reason(value)
            met = judge_rule(history, self.rule["threshold"], self.rule["epochs"], self.rule["consecutive"]).passed
            if reason is None and not met and trial.should_prune():  # a trial that met the rule ends on its own
                reason = (f"pruned after epoch {value.epoch} ({value.test_accuracy:.2%}): below the median of the "
                          "earlier trials at that epoch")
            if reason is not None:
                raise Pruned(reason)

        request = TrainRequest(model, "rule", self.final_activation, int(table.get("seed", 0)),
                               device=self.settings.device, data_dir=self.settings.data_dir or
                               str(self.project.mnist_root()), threads=self.threads, estimate_runs=0,
                               epoch_records=True)
        try:
            with heartbeat(self.optuna, self.storage, trial._trial_id):
                result = self._call(model, "trial", request, on_note)
        except Pruned as pruned:
            trial.set_user_attr("reason", pruned.reason)
            self.study.tell(trial, state=state.PRUNED)
            self._fails_in_a_row = 0
            self.say(f"tune {self.name}: trial {trial.number} pruned: {pruned.reason}")
            return
        except MnistArchError as exc:
            from mnist_arch.isolate import is_stopping

            # Killed by us (Ctrl-C), or by a stop signal, which kills the workers before Ctrl-C's path.
            stopped = self._halted.is_set() or is_stopping()
            reason = "interrupted (Ctrl-C): re-run the same command to continue" if stopped else str(exc)
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=state.FAIL)
            if not stopped:
                self._failed(reason, trial.number if unfixable else None)
                self.say(f"tune {self.name}: trial {trial.number} failed: {reason}")
            return
        except BaseException:
            trial.set_user_attr("reason", "interrupted")
            self.study.tell(trial, state=state.FAIL)
            raise
        self._fails_in_a_row = 0
        self.tell(trial, result)

    def _failed(self, reason: str, unfixable: int | None = None) -> None:
        """A trial failed with an error (not pruned): the search stops at once where no recipe can fix it
        (`unfixable` is then the trial's number: `remote.recipe_may_fix`), else after MAX_FAILS_IN_A_ROW
        failed trials in a row."""
        with self._lock:
            self._fails_in_a_row += 1
            if self._error is not None:
                return
            if unfixable is not None:
                self._error = (f"{reason.rstrip()} No recipe can change that, so the search stopped at trial "
                               f"{unfixable} rather than run the next recipes into the same error.")
            elif self._fails_in_a_row >= MAX_FAILS_IN_A_ROW:
                self._error = (f"{MAX_FAILS_IN_A_ROW} trials in a row failed; the search stops. The last one: "
                               f"{reason}")
            else:
                return
            self._stop.set()

    def tell(self, trial, result: TrainResult) -> None:
        s = score(result.history, self.rule["threshold"], self.rule["epochs"], self.rule["consecutive"],
                  result.collapsed)
        trial.set_user_attr("accuracies", [e.test_accuracy for e in result.history])
        trial.set_user_attr("passed", s.passed)
        trial.set_user_attr("passed_epoch", s.epoch)
        trial.set_user_attr("reason", s.reason)
        trial.set_user_attr("seconds", round(result.seconds, 1))
        trial.set_user_attr("threads", result.threads)
        self.study.tell(trial, s.value)
        self.say(f"tune {self.name}: trial {trial.number} {'met the rule' if s.passed else 'missed the rule'}: "
                 f"{s.reason}")

    # --- progress

    def best_line(self) -> str:
        rows = [t for t in self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.COMPLETE,))]
        passed = [t for t in rows if t.user_attrs.get("passed")]
        if passed:
            best = min(passed, key=lambda t: t.value)
            return f"best: trial {best.number}, the rule met in epoch {best.user_attrs['passed_epoch']}"
        accuracies = [max(t.user_attrs.get("accuracies") or [0]) for t in
                      self.study.get_trials(deepcopy=False) if t.user_attrs.get("accuracies")]
        return f"best: none met the rule yet, best accuracy {max(accuracies):.2%}" if accuracies else "best: none yet"

    def _time_left(self) -> float:
        return max(0.0, self.settings.timeout - (time.monotonic() - self._started))

    def time_left(self) -> float | None:
        """This run's time left: the mean finished trial times the trials left, over the jobs, at most the
        timeout; None before any trial has finished."""
        finished = [t for t in self.finished() if t.datetime_start and t.datetime_complete]
        left = self._time_left()
        if not finished:
            return None
        mean = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished) / len(finished)
        return min(left, mean * max(0, self.settings.trials - len(finished)) / self.settings.jobs)

    def progress(self, number: int, history: Sequence[Epoch]) -> None:
        e = history[-1]
        held = in_a_row(x.test_accuracy >= self.rule["threshold"] for x in history)[-1]
        left = self.time_left()
        line = (f"tune {self.name}: trial {number} epoch {e.epoch}/{self.rule['epochs']} test accuracy "
                f"{e.test_accuracy:.2%} ({held}/{self.rule['consecutive']} in a row at {self.rule['threshold']:.2%}); "
                f"{self.best_line()}; {len(self.finished())} of {self.settings.trials} trials finished, "
                + (f"about {duration(left)} left" if left is not None else
                   f"time left unknown until a trial ends (at most {duration(self._time_left())})"))
        self.say(line)

    # --- the result

    def outcome(self) -> Outcome:
        return outcome_of(self.study.get_trials(deepcopy=False), self.model, self.name, self.where, self.rule)

    def rerun_seeds(self, best: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The best recipe's seeds, each in its own worker as `mnist-arch train --tier rule --seed S` runs it, as
        many at once as there are cores (the cores split between them); kept in the study, so that a second
        run of the same command does not train them again. A seed whose run ended in an error (its worker killed,
        a set-up of ours that failed) is not a verdict: it is reported as not run, kept out of the study, and the
        same command runs it again."""
        from mnist_arch.work import TrainRequest

        key = f"seeds of trial {best['number']}"
        known = {int(k): v for k, v in (self.study.user_attrs.get(key) or {}).items()
                 if not v["reason"].startswith("error: ")}  # an error is no verdict (older studies kept it)
        todo = [s for s in self.settings.seeds if s not in known]
        at_once = max(1, min(len(todo), self.cores))
        if todo:
            self.say(f"tune {self.name}: the best recipe (trial {best['number']}) again with seed(s) "
                     f"{', '.join(map(str, todo))} ({at_once} at once)")
        model = model_with(self.project, self.model, best["table"])
        queue = list(todo)

        def worker() -> None:
            while True:
                with self._lock:
                    if not queue or self._stop.is_set():
                        return
                    seed = queue.pop(0)
                request = TrainRequest(model, "rule", self.final_activation, seed, device=self.settings.device,
                                       data_dir=self.settings.data_dir or str(self.project.mnist_root()),
                                       threads=max(1, self.cores // at_once), estimate_runs=0)
                try:
                    result = self._call(model, "train", request)
                    entry = {"passed": result.passed, "reason": result.judged().reason,
                             "accuracies": [e.test_accuracy for e in result.history]}
                except MnistArchError as exc:
                    if self._stop.is_set():
                        return
                    with self._lock:
                        errors[seed] = {"passed": False, "reason": f"error: {exc}", "accuracies": [], "error": True}
                    self.say(f"tune {self.name}: seed {seed} could not run (it is run again by the same command): "
                             f"{exc}")
                    continue
                with self._lock:
                    known[seed] = entry
                    self.study.set_user_attr(key, {str(k): v for k, v in known.items()})
                self.say(f"tune {self.name}: seed {seed} {'met' if entry['passed'] else 'missed'} the rule: "
                         f"{entry['reason']}")

        errors: dict[int, dict[str, Any]] = {}
        self._parallel(worker, [()] * at_once)
        return [{"seed": s, **(known.get(s) or errors[s])} for s in self.settings.seeds if s in known or s in errors]

