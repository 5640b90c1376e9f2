"""`mnist-arch tune`: the cheapest recipe that meets a model's rule, searched with Optuna (docs/tune.md).

A study is a set of trials; each trial is one rule-tier run (`remote.train`, in an isolated worker as
every training run is) of a recipe drawn from the search space. The parent process (this module) owns the
Optuna study: it draws each trial's recipe, receives the run's epochs on the worker's pipe, reports them to
the pruner and stops the worker when the trial is pruned. Nothing here imports torch.

- **Objective** (minimised): a trial that meets the rule scores the epoch its K-in-a-row streak ends, minus the
  lowest accuracy of that streak (so 9 epochs at 99.45% beat 9 at 99.41%, and any 8 beat any 9); one that
  does not scores `epochs + 2` minus the best accuracy it held for K epochs in a row: always worse than a
  passing one, and better the closer it came. Fewest epochs first, because the rule says "within N": a
  recipe that passes in 9 leaves 6 epochs for an unlucky seed, and costs less to run again.
- **Storage**: a journal file beside pyproject.toml (`.mnist-arch/tune.journal`, in a folder whose own
  .gitignore keeps it out of git), or `--storage URL` (sqlite:///..., postgresql://...). Each trial records
  its owner (host, pid, process start time); a run first fails the RUNNING trials whose owner is dead on this
  host (Optuna's heartbeat covers relational storage only; it is on there too, for owners on other hosts).
- **Trials**: `--trials` is the study's total of finished (complete or pruned) trials, whoever ran them: a
  trial is claimed under a lock (a file lock beside the journal) and, where the storage is shared with other
  machines, checked again by its number, so N workers on one study finish exactly `--trials`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError
from mnist_arch.runs import Epoch, duration, in_a_row, judge_rule

if TYPE_CHECKING:
    from mnist_arch.project import Project
    from mnist_arch.runs import TrainResult
    from mnist_arch.work import Declared, TrainRequest

#: Defaults of the command line (docs/tune.md says why).
DEFAULT_TRIALS = 30
DEFAULT_TIMEOUT = 8 * 3600.0
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
#: A best accuracy at or below this is "near chance": MNIST's largest class is 11.35% of the test set.
CHANCE = 0.2
#: Where the embedded storage lives, beside pyproject.toml.
STORAGE_FOLDER = ".mnist-arch"
JOURNAL = "tune.journal"
#: Trials in a row of one run that may fail (not pruned: an error) before the run stops with the error.
MAX_FAILS_IN_A_ROW = 3

# ---------------------------------------------------------------------------------------------
# The search space


#: The default space. A range [low, high] (log scale for LOG_FIELDS, whole numbers for INT_FIELDS) or a list
#: of choices (CHOICE_FIELDS); a table's single value fixes the field. `lr` may also be a table per optimizer.
DEFAULT_SPACE: dict[str, Any] = {
    "optimizer": ["sgd", "adam"],
    "lr": {"sgd": [0.01, 0.3], "adam": [3e-4, 1e-2], "adamw": [3e-4, 1e-2], "adagrad": [3e-3, 0.1]},
    "momentum": [0.8, 0.95],  # SGD only
    "nesterov": [True, False],  # SGD only
    "weight_decay": [1e-6, 1e-3],
    "schedule": ["onecycle", "step", "cosine", "none"],
    "pct_start": [0.1, 0.4],  # onecycle: the share of steps spent warming up to the peak lr
    "step_size": [2, 8],  # step: epochs between drops (at most the rule's epochs)
    "gamma": [0.1, 0.5],  # step: the drop
    "batch_size": [64, 128, 256],
    "rotation": [0.0, 15.0],  # degrees, RandomRotation
    "translate": [0.0, 0.1],  # fraction of the image, RandomAffine
    "label_smoothing": [0.0, 0.1],
}
CHOICE_FIELDS = ("optimizer", "nesterov", "schedule", "batch_size")
LOG_FIELDS = ("lr", "weight_decay")
INT_FIELDS = ("step_size",)
#: The rule table's fields a trial sets (the others of the table, say threshold or train_subset, stay).
SEARCHED = ("optimizer", "lr", "optimizer_kwargs", "schedule", "schedule_kwargs", "batch_size", "rotation",
            "translate", "label_smoothing")
_SCHEDULES = ("onecycle", "step", "cosine", "plateau", "none")


def parse_space(table: Any, where: str) -> dict[str, Any]:
    """The search space: DEFAULT_SPACE with a [tool.mnist-arch.models.NAME.tune] table's fields over it, each
    checked (one paragraph naming the table, the field and the form it takes)."""
    from mnist_arch.spec import RECIPE_CHOICES, check_table

    if table is None:
        return dict(DEFAULT_SPACE)
    check_table(table, where, DEFAULT_SPACE, f"the table may set {', '.join(DEFAULT_SPACE)}")
    space = dict(DEFAULT_SPACE)
    choices = {"optimizer": RECIPE_CHOICES["optimizer"], "schedule": _SCHEDULES, "nesterov": (True, False)}
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        if key in CHOICE_FIELDS:
            allowed = choices.get(key)
            ok = values and all((v in allowed and type(v) is type(allowed[0])) if allowed else
                                (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in values)
            if not ok:
                raise MnistArchError(f"{where}: '{key}' must be one value or a list of choices"
                                     + (f" among {', '.join(map(str, allowed))}" if allowed else
                                        " of whole numbers of at least 1, e.g. [64, 128, 256]")
                                     + f", found {value!r}.")
            space[key] = values
        elif key == "lr" and isinstance(value, dict):
            unknown = sorted(set(value) - set(RECIPE_CHOICES["optimizer"]))
            if unknown:
                raise MnistArchError(f"{where}: 'lr' as a table names optimizers "
                                     f"({', '.join(RECIPE_CHOICES['optimizer'])}), found {unknown[0]!r}.")
            space[key] = {**DEFAULT_SPACE["lr"], **{k: _range(key, v, where) for k, v in value.items()}}
        else:
            space[key] = _range(key, value, where)
    return space


def _range(key: str, value: Any, where: str) -> list[float]:
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    pair = value if isinstance(value, list) else [value, value]
    least = 1 if key in INT_FIELDS else 0
    ok = (len(pair) == 2 and all(map(number, pair)) and least <= pair[0] <= pair[1]
          and (key not in LOG_FIELDS or pair[0] > 0)
          and (key not in INT_FIELDS or all(isinstance(v, int) for v in pair)))
    if not ok:
        form = ("whole numbers of at least 1" if key in INT_FIELDS else
                "numbers above 0 (sampled on a log scale)" if key in LOG_FIELDS else "numbers of at least 0")
        raise MnistArchError(f"{where}: '{key}' must be one value or a range [low, high] of {form} with low <= "
                             f"high, found {value!r}.")
    return pair


def _round(value: float) -> float:
    """Three significant digits: what the table shows is what the trial ran."""
    return float(f"{value:.3g}")


def suggest(trial: Any, space: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """A trial's recipe: the rule table's fields from `space` (define-by-run: momentum only for SGD, a
    schedule's own settings only with it)."""
    def pick(key: str) -> Any:
        values = space[key]
        if len(values) == 1:
            return values[0]
        # Optuna keeps a choice's list for the whole study: another list (a table changed between runs) is
        # another parameter, so the study goes on with it.
        name = key if values == DEFAULT_SPACE[key] else f"{key} in {'/'.join(map(str, values))}"
        return trial.suggest_categorical(name, values)

    def draw(key: str, name: str | None = None, high: float | None = None, bounds: Sequence | None = None) -> float:
        low, top = bounds or space[key]
        top = min(top, high) if high is not None else top
        low = min(low, top)
        if low == top:
            return low
        if key in INT_FIELDS:
            return trial.suggest_int(name or key, int(low), int(top))
        return _round(trial.suggest_float(name or key, low, top, log=key in LOG_FIELDS))

    optimizer = pick("optimizer")
    lr = draw("lr", f"lr_{optimizer}", bounds=space["lr"][optimizer]) if isinstance(space["lr"], dict) \
        else draw("lr")
    fields: dict[str, Any] = {"optimizer": optimizer, "lr": lr, "batch_size": pick("batch_size")}
    kwargs: dict[str, Any] = {}
    if optimizer == "sgd":
        kwargs["momentum"] = draw("momentum")
        if kwargs["momentum"] > 0:
            kwargs["nesterov"] = pick("nesterov")
    weight_decay = draw("weight_decay")
    if weight_decay > 0:
        kwargs["weight_decay"] = weight_decay
    if kwargs:
        fields["optimizer_kwargs"] = kwargs
    schedule = pick("schedule")
    if schedule == "onecycle":
        fields.update(schedule="onecycle", schedule_kwargs={"max_lr": lr, "pct_start": draw("pct_start")})
    elif schedule == "step":
        fields.update(schedule="step", schedule_kwargs={"step_size": draw("step_size", high=epochs),
                                                        "gamma": draw("gamma")})
    elif schedule in ("cosine", "plateau"):
        fields["schedule"] = schedule
    for key in ("rotation", "translate", "label_smoothing"):
        value = draw(key)
        if value > 0:
            fields[key] = value
    return fields


# ---------------------------------------------------------------------------------------------
# The objective


@dataclass(frozen=True)
class Score:
    value: float  # minimised (module docstring)
    passed: bool
    epoch: int | None  # the epoch the rule was met in
    held: float  # the best accuracy held for `consecutive` epochs in a row
    reason: str


def score(history: Sequence[Epoch], threshold: float, epochs: int, consecutive: int,
          collapsed: dict | None = None) -> Score:
    """A finished trial's objective value, from its epochs and the rule (`runs.judge_rule`)."""
    verdict = judge_rule(history, threshold, epochs, consecutive, collapsed)
    accuracies = [e.test_accuracy for e in history[:epochs]]
    width = max(1, min(consecutive, len(accuracies)))
    held = max((min(accuracies[i:i + width]) for i in range(len(accuracies) - width + 1)), default=0.0)
    if verdict.passed:
        streak = [e.test_accuracy for e in history if e.epoch in verdict.held]
        return Score(verdict.held[-1] - min(streak), True, verdict.held[-1], min(streak), verdict.reason)
    return Score(epochs + 2 - held, False, None, held, verdict.reason)


def prune_reason(epoch: Epoch) -> str | None:
    """Why a trial stops at once after this epoch, whatever the pruner says: no later epoch can help."""
    if not (math.isfinite(epoch.train_loss) and math.isfinite(epoch.test_loss)):
        return (f"the loss is not a number in epoch {epoch.epoch} (train loss {epoch.train_loss}, test loss "
                f"{epoch.test_loss}): the weights are lost")
    if epoch.collapsed:
        return (f"collapsed in epoch {epoch.epoch}: {epoch.collapsed['share']:.1%} of the test predictions are "
                f"class {epoch.collapsed['class']} (an MNIST class is about 10%)")
    return None


# ---------------------------------------------------------------------------------------------
# Storage


def import_optuna():
    """Optuna, or the one-paragraph error that says which extra brings it."""
    try:
        import optuna
    except ImportError:
        raise MnistArchError("mnist-arch tune searches with Optuna, an optional extra that is not installed here: "
                             "pip install \"mnist-arch[tune]\" (Optuna, and psycopg for --storage postgresql://...)."
                             ) from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # We beat for it ourselves (`heartbeat`): Optuna's own beat comes only with Study.optimize.
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    return optuna


def default_storage(root: Path) -> Path:
    """The journal beside pyproject.toml, in a folder that keeps itself out of git."""
    folder = root / STORAGE_FOLDER
    folder.mkdir(exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# mnist-arch tune's study (docs/tune.md): not for git\n*\n", encoding="utf-8")
    return folder / JOURNAL


#: Seconds between an RDB trial's heartbeats, and how long one may be missing before the trial is failed.
HEARTBEAT, GRACE = 30, 180


def open_storage(optuna, url: str | None, root: Path) -> tuple[Any, Path | None, str]:
    """(storage, the journal's lock file or None, the storage in words) for `--storage URL` or the default."""
    if url is None or url.endswith(".journal") or url.startswith("journal:"):
        path = default_storage(root) if url is None else Path(url.removeprefix("journal:")).resolve()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = optuna.storages.journal.JournalFileBackend(str(path))
        except OSError as exc:
            raise MnistArchError(f"The study's journal {path} cannot be opened: {exc}.") from None
        return optuna.storages.journal.JournalStorage(backend), path.with_name(path.name + ".claim"), str(path)
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise MnistArchError(f"--storage {url!r} is neither a database URL (sqlite:///tune.db, "
                             "postgresql://user:password@host/db, mysql+pymysql://...) nor a .journal file.")
    shown = re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)  # no password in a message or a log
    if url.startswith(("postgresql://", "postgres://")):  # SQLAlchemy's default driver is psycopg2; ours is 3
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            url = "postgresql+psycopg://" + url.split("://", 1)[1]
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna's words
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, heartbeat_interval=HEARTBEAT, grace_period=GRACE)
            return storage, None, shown
        except ImportError as exc:
            raise MnistArchError(f"--storage {shown} needs a database driver that is not installed ({exc}): for "
                                 "PostgreSQL, pip install \"mnist-arch[tune]\" brings psycopg.") from None
        except Exception as exc:  # SQLAlchemy's errors: the server is down, the password is wrong, ...
            # Workers that start together on an empty database all create Optuna's tables; all but one
            # collide (a unique violation) and find them made when they try again.
            if attempt == 3 or "connection" in str(exc).lower():
                raise MnistArchError(f"--storage {shown} cannot be opened: {type(exc).__name__}: "
                                     f"{str(exc).splitlines()[0] if str(exc) else ''}.") from None
            time.sleep(0.5 + attempt)
    raise AssertionError("unreachable")


def _started(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (/proc/PID/stat), None when it is gone: a pid with
    another start time is another process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[19]
    except (OSError, IndexError):
        return None


def owner() -> dict[str, Any]:
    """This process, as a trial records it (user attr `owner`)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _started(os.getpid())}


def owner_dead(who: Any) -> bool:
    """Whether a trial's owner is known dead: on this host, its pid no longer runs the process it did."""
    if not isinstance(who, dict) or who.get("host") != socket.gethostname() or not isinstance(who.get("pid"), int):
        return False
    return _started(who["pid"]) is None or _started(who["pid"]) != who.get("started")


def fail_stale(optuna, study, storage) -> list[int]:
    """Fail the RUNNING trials whose owner died on this host (a kill -9, a cancelled job), and, on relational
    storage, those whose heartbeat stopped (Optuna's own check). The numbers of the trials failed here."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if owner_dead(t.user_attrs.get("owner")):
            storage.set_trial_user_attr(t._trial_id, "reason", f"its process ({t.user_attrs['owner']['pid']} on "
                                        f"{t.user_attrs['owner']['host']}) ended before the trial did")
            if storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                failed.append(t.number)
    if isinstance(storage, optuna.storages.RDBStorage):
        optuna.storages.fail_stale_trials(study)
    return failed


@contextmanager
def heartbeat(optuna, storage, trial_id: int, interval: float = HEARTBEAT):
    """While a trial runs on relational storage, its heartbeat every `interval` seconds (Optuna's own
    `optimize` does this; `ask` and `tell` leave it to the caller), so that a worker on another machine fails
    it once the heartbeat stops (`fail_stale`). Nothing on a journal, which has no heartbeat."""
    if not isinstance(storage, optuna.storages.RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:  # the database is away for a moment: the next beat tries again
                pass
            if stop.wait(interval):
                return

    thread = threading.Thread(target=beat, name=f"heartbeat of trial {trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextmanager
def _claim_lock(path: Path | None, lock: threading.Lock):
    """Held while a trial is claimed: this process's threads, and other processes on the journal's host."""
    with lock:
        if path is None:
            yield
            return
        import fcntl

        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# The study


@dataclass
class Settings:
    trials: int = DEFAULT_TRIALS
    timeout: float = DEFAULT_TIMEOUT
    jobs: int = 1
    storage: str | None = None
    study: str | None = None  # default: the model's name
    seeds: Sequence[int] = DEFAULT_SEEDS
    device: str = "auto"
    data_dir: str | None = None
    epoch_timeout: float | None = None


@dataclass
class Outcome:
    """What a study leaves: every trial, the best passing one's table, and its seeds' verdicts."""

    model: str
    study: str
    storage: str
    rule: dict[str, Any]
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None  # the best trial that met the rule (a row of `trials`)
    best_accuracy: float  # the best test accuracy of any trial, pruned ones too
    seeds: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""  # the best recipe as the TOML table to paste
    interrupted: bool = False
    stop: BaseException | None = None  # what interrupted it (Ctrl-C, a stop signal), for the face to end with

    @property
    def near_chance(self) -> bool:
        return bool(self.trials) and self.best_accuracy <= CHANCE

    @property
    def passed(self) -> bool:
        return self.best is not None and not self.near_chance

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "near_chance": self.near_chance, "passed": self.passed}


class _Pruned(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def rule_fields(recipe) -> dict[str, Any]:
    return {"threshold": recipe.min_accuracy, "epochs": recipe.epochs, "consecutive": recipe.consecutive or 1}


class Study:
    """One `mnist-arch tune` run on one study: claims trials until the study has its total, runs each in a
    worker, then re-runs the best recipe's seeds."""

    def __init__(self, project: Project, model: Declared, base: Mapping[str, Any], space: Mapping[str, Any],
                 settings: Settings, say: Callable[[str], None]) -> None:
        self.optuna = import_optuna()
        self.project, self.model, self.base, self.space, self.settings, self.say = \
            project, model, dict(base), space, settings, say
        self.recipe = self.recipe_of(self.base)
        self.rule = rule_fields(self.recipe)
        self.storage, self.lock_path, self.where = open_storage(self.optuna, settings.storage, project.root)
        name = settings.study or model.name
        sampler = self.optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True,
                                                  n_startup_trials=8)
        pruner = self.optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)  # from epoch 3
        try:
            self.study = self.optuna.create_study(storage=self.storage, study_name=name, direction="minimize",
                                                  sampler=sampler, pruner=pruner, load_if_exists=True)
        except Exception as exc:
            raise MnistArchError(f"The study {name!r} in {self.where} cannot be opened: {type(exc).__name__}: "
                                 f"{exc}.") from None
        stored = self.study.user_attrs.get("rule")
        if stored is None:
            self.study.set_user_attr("rule", self.rule)
        elif stored != self.rule:
            raise MnistArchError(f"The study {name!r} in {self.where} searched for another rule ({stored}); "
                                 f"{model.source} states {self.rule} now. Its trials would be judged by the wrong "
                                 "rule: give this search a name of its own (--study NAME), or delete the study.")
        self.name = name
        self._lock = threading.Lock()  # claims, and the state below
        self._workers: set[Any] = set()
        self._stop = threading.Event()
        self._started = time.monotonic()
        self._fails_in_a_row = 0
        self._error: str | None = None
        self.final_activation: str | None = None
        from mnist_arch.runs import available_cores

        self.cores = available_cores()
        # Threads split between the trials that run at once; one trial alone: train.choose_threads decides.
        self.threads = max(1, self.cores // settings.jobs) if settings.jobs > 1 else None

    # --- a trial's recipe

    def recipe_of(self, table: Mapping[str, Any]):
        """The rule tier's Recipe of a rule table (checked as the project's own is)."""
        from mnist_arch.project import TRAIN_DEFAULTS
        from mnist_arch.spec import parse_rule_fields

        where = (f"{self.project.path} [tool.mnist-arch.models.{self.model.name}.rule]" if self.project.path
                 and not self.model.source.startswith("--model") else f"the rule given for {self.model.name}")
        recipe = parse_rule_fields(dict(table), where, TRAIN_DEFAULTS)
        declared = self.model.spec.recipes.get("rule")
        if "loss" not in table and declared is not None:
            recipe = dataclasses.replace(recipe, loss=declared.loss)
        return recipe

    def model_with(self, table: Mapping[str, Any]) -> Declared:
        recipes = {**self.model.spec.recipes, "rule": self.recipe_of(table)}
        return dataclasses.replace(self.model, spec=self.model.spec.replace(recipes=recipes))

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
        with _claim_lock(self.lock_path, self._lock):
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
            except _Pruned:
                worker.close(kill=True)  # now: the worker is mid-epoch and would not answer a polite close
                raise
            finally:
                with self._lock:
                    self._workers.discard(worker)

    def _halt(self) -> None:
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
            table = {**{k: v for k, v in self.base.items() if k not in SEARCHED},
                     **suggest(trial, dict(self.space), self.rule["epochs"])}
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
        try:
            model = self.model_with(table)
        except MnistArchError as exc:  # a space the table widened beyond what a recipe may be
            trial.set_user_attr("reason", str(exc))
            self.study.tell(trial, state=state.FAIL)
            self._failed(str(exc))
            return

        def on_note(value: Any) -> None:
            if isinstance(value, tuple) and value[:1] == ("pid",):
                trial.set_user_attr("worker_pid", value[1])
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
                raise _Pruned(reason)

        request = TrainRequest(model, "rule", self.final_activation, int(table.get("seed", 0)),
                               device=self.settings.device, data_dir=self.settings.data_dir or
                               str(self.project.mnist_root()), threads=self.threads, estimate_runs=0,
                               epoch_records=True)
        try:
            with heartbeat(self.optuna, self.storage, trial._trial_id):
                result = self._call(model, "train", request, on_note)
        except _Pruned as pruned:
            trial.set_user_attr("reason", pruned.reason)
            self.study.tell(trial, state=state.PRUNED)
            self._fails_in_a_row = 0
            self.say(f"tune {self.name}: trial {trial.number} pruned: {pruned.reason}")
            return
        except MnistArchError as exc:
            from mnist_arch.isolate import is_stopping

            stopped = self._stop.is_set() or is_stopping()  # a stop signal kills the workers before Ctrl-C's path
            reason = "interrupted (Ctrl-C): re-run the same command to continue" if stopped else str(exc)
            trial.set_user_attr("reason", reason)
            self.study.tell(trial, state=state.FAIL)
            if not stopped:
                self._failed(reason)
                self.say(f"tune {self.name}: trial {trial.number} failed: {reason}")
            return
        except BaseException:
            trial.set_user_attr("reason", "interrupted")
            self.study.tell(trial, state=state.FAIL)
            raise
        self._fails_in_a_row = 0
        self.tell(trial, result)

    def _failed(self, reason: str) -> None:
        with self._lock:
            self._fails_in_a_row += 1
            if self._fails_in_a_row >= MAX_FAILS_IN_A_ROW and self._error is None:
                self._error = (f"{MAX_FAILS_IN_A_ROW} trials in a row failed; the search stops. The last one: "
                               f"{reason}")
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
        rows = [trial_row(t) for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number)]
        passed = [r for r in rows if r["passed"] and r["state"] == "COMPLETE"]
        best = min(passed, key=lambda r: r["value"]) if passed else None
        best_accuracy = max((r["best_accuracy"] for r in rows if r["best_accuracy"] is not None), default=0.0)
        # A --model PATH.py:ATTR has no table yet: the name `mnist-arch init` would give it (ATTR in lower case).
        name = self.model.name.rpartition(":")[2].lower() if self.model.source.startswith("--model") \
            else self.model.name
        table = render_table(name, best["table"]) if best else ""
        return Outcome(self.model.name, self.name, self.where, self.rule, rows, best, best_accuracy, table=table)

    def rerun_seeds(self, best: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The best recipe's seeds, each in its own worker as `mnist-arch train --tier rule --seed S` runs it, as
        many at once as there are cores (the cores split between them); kept in the study, so that a second
        run of the same command does not train them again."""
        from mnist_arch.work import TrainRequest

        key = f"seeds of trial {best['number']}"
        known = {int(k): v for k, v in (self.study.user_attrs.get(key) or {}).items()}
        todo = [s for s in self.settings.seeds if s not in known]
        at_once = max(1, min(len(todo), self.cores))
        if todo:
            self.say(f"tune {self.name}: the best recipe (trial {best['number']}) again with seed(s) "
                     f"{', '.join(map(str, todo))} ({at_once} at once)")
        model = self.model_with(best["table"])
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
                    entry = {"passed": False, "reason": f"error: {exc}", "accuracies": []}
                with self._lock:
                    known[seed] = entry
                    self.study.set_user_attr(key, {str(k): v for k, v in known.items()})
                self.say(f"tune {self.name}: seed {seed} {'met' if entry['passed'] else 'missed'} the rule: "
                         f"{entry['reason']}")

        self._parallel(worker, [()] * at_once)
        return [{"seed": s, **known[s]} for s in self.settings.seeds]


def trial_row(t) -> dict[str, Any]:
    """A trial as the trials table and the JSON report show it."""
    accuracies = t.user_attrs.get("accuracies") or []
    finite = [a for a in accuracies if isinstance(a, (int, float)) and math.isfinite(a)]
    return {"number": t.number, "state": t.state.name, "value": t.value,
            "epochs": len(accuracies), "best_accuracy": max(finite) if finite else None,
            "passed": bool(t.user_attrs.get("passed")), "passed_epoch": t.user_attrs.get("passed_epoch"),
            "reason": t.user_attrs.get("reason", ""), "table": t.user_attrs.get("table") or {},
            "seconds": ((t.datetime_complete - t.datetime_start).total_seconds()
                        if t.datetime_start and t.datetime_complete else None)}




# ---------------------------------------------------------------------------------------------
# Reports


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


_ORDER = ("threshold", "epochs", "consecutive", "seed")


def table_lines(fields: Mapping[str, Any]) -> list[str]:
    keys = [k for k in _ORDER if k in fields] + [k for k in fields if k not in _ORDER]
    return [f"{key} = {toml_value(fields[key])}" for key in keys]


def render_table(name: str, fields: Mapping[str, Any]) -> str:
    """The rule table to paste into pyproject.toml."""
    key = name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)
    return "\n".join([f"[tool.mnist-arch.models.{key}.rule]", *table_lines(fields)])


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def trials_table(outcome: Outcome) -> str:
    """Markdown: one row per trial, then the verdict."""
    lines = ["| trial | state | epochs | best accuracy | rule met in | optimizer | lr | schedule | batch | rotation | "
             "why |", "| ---: | --- | ---: | ---: | ---: | --- | ---: | --- | ---: | ---: | --- |"]
    for r in outcome.trials:
        t = r["table"]
        best = f"{r['best_accuracy']:.2%}" if r["best_accuracy"] is not None else "-"
        lines.append(f"| {r['number']} | {r['state'].lower()} | {r['epochs']} | {best} | "
                     f"{r['passed_epoch'] or '-'} | {t.get('optimizer', '-')} | {t.get('lr', '-')} | "
                     f"{t.get('schedule', 'none') if t else '-'} | {t.get('batch_size', '-')} | "
                     f"{t.get('rotation', 0) if t else '-'} | {_cell(r['reason'])[:160]} |")
    return "\n".join(lines + ["", verdict(outcome)])


def verdict(outcome: Outcome) -> str:
    rule = outcome.rule
    words = (f"{rule['threshold']:.2%} held for {rule['consecutive']} epoch(s) in a row within {rule['epochs']}")
    finished = sum(r["state"] in ("COMPLETE", "PRUNED") for r in outcome.trials)
    if outcome.near_chance:
        return (f"**NEAR CHANCE**: {outcome.model}: the best of {finished} finished trials reached "
                f"{outcome.best_accuracy:.2%} (chance is about 10%, the largest class 11.35%): the network never "
                "trained under any recipe tried. Check the model (its output, its loss, a frozen or detached "
                "layer) before searching further.")
    if outcome.best is None:
        return (f"**NOT MET**: no trial of {finished} met {words}; the best accuracy was "
                f"{outcome.best_accuracy:.2%}. Run more trials (--trials), widen the space ([...tune] table), or "
                "change the model.")
    seeds = ""
    if outcome.seeds:
        met = sum(s["passed"] for s in outcome.seeds)
        seeds = (f"; seeds {', '.join(str(s['seed']) for s in outcome.seeds)} again: {met} of "
                 f"{len(outcome.seeds)} met the rule")
    return (f"**MET**: trial {outcome.best['number']} met the rule ({words}): "
            f"{outcome.best['reason'].removeprefix('passed: ')}{seeds}.")


# ---------------------------------------------------------------------------------------------
# --write


_KEY = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")
_HEADER = re.compile(r"^\s*\[")


def _rule_header(name: str) -> re.Pattern:
    quoted = rf"(?:{re.escape(name)}|\"{re.escape(name)}\"|'{re.escape(name)}')"
    return re.compile(rf"^\s*\[\s*tool\s*\.\s*(?:mnist-arch|\"mnist-arch\"|'mnist-arch')\s*\.\s*models\s*\.\s*"
                      rf"{quoted}\s*\.\s*rule\s*\]\s*(#.*)?$")


def _depth(line: str) -> int:
    """Brackets a line opens and does not close (outside strings and comments): a multi-line array."""
    depth, quote = 0, ""
    for ch in line:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
    return depth


def write_rule(path: Path, name: str, fields: Mapping[str, Any]) -> str:
    """Put the searched fields of `fields` into the model's rule table in `path` (the table's other lines, and
    every other byte of the file, as they were; a new table at the end where there is none). The new text."""
    text = path.read_bytes().decode("utf-8")  # bytes: line ends as they are (read_text would make them \n)
    lines = text.splitlines(keepends=True)
    header = _rule_header(name)
    start = next((i for i, line in enumerate(lines) if header.match(line.rstrip("\r\n"))), None)
    eol = "\r\n" if start is not None and lines[start].endswith("\r\n") else "\n"  # the file's own line ends
    new = [line + eol for line in table_lines({k: v for k, v in fields.items() if k in SEARCHED})]
    if start is None:
        sep = "" if not text or text.endswith("\n") else "\n"
        result = text + sep + "\n" + render_table(name, fields) + "\n"
    else:
        end = next((i for i in range(start + 1, len(lines))
                    if _HEADER.match(lines[i]) and _depth_before(lines, start, i) == 0), len(lines))
        body, kept, at, depth, dropping = lines[start + 1:end], [], None, 0, False
        for line in body:
            if depth == 0:
                match = _KEY.match(line)
                dropping = bool(match) and match.group(1).strip("\"'") in SEARCHED
                if dropping and at is None:
                    at = len(kept)
            depth += _depth(line)
            if not dropping:
                kept.append(line)
        if at is None:  # after the table's last line that is not blank
            at = max((i + 1 for i, line in enumerate(kept) if line.strip()), default=0)
            if kept and at > 0 and not kept[at - 1].endswith("\n"):
                kept[at - 1] += eol
        kept[at:at] = new
        result = "".join(lines[:start + 1] + kept + lines[end:])
    _check_written(path, text, result, name, fields)
    path.write_bytes(result.encode("utf-8"))
    return result


def _depth_before(lines: list[str], start: int, i: int) -> int:
    return sum(_depth(line) for line in lines[start + 1:i])


def _check_written(path: Path, old: str, new: str, name: str, fields: Mapping[str, Any]) -> None:
    """The new file parses, its rule table is the old one's fields but the searched ones, plus `fields`' searched
    ones (all of `fields` for a new table), and nothing else changed: else nothing is written."""
    from mnist_arch.project import tomllib

    def split(text: str) -> tuple[dict, dict | None]:
        data = tomllib.loads(text)
        model = data.get("tool", {}).get("mnist-arch", {}).get("models", {}).get(name, {})
        return data, model.pop("rule", None) if isinstance(model, dict) else None

    before, old_rule = split(old)
    try:
        after, new_rule = split(new)
    except tomllib.TOMLDecodeError as exc:
        after, new_rule = {"error": str(exc)}, None
    if old_rule is None:
        expected = dict(fields)
    else:
        expected = {**{k: v for k, v in old_rule.items() if k not in SEARCHED},
                    **{k: v for k, v in fields.items() if k in SEARCHED}}
    if after != before or new_rule != expected:
        raise MnistArchError(f"{path}: the rule table of {name} is written in a form --write does not edit safely "
                             "(a sub-table or a dotted key of a searched field, say), so nothing was written. Paste "
                             "the table printed above over it instead.")


# ---------------------------------------------------------------------------------------------
# What to tune


def what_to_tune(project: Project, model: Declared, threshold: float | None = None, epochs: int | None = None,
                 consecutive: int | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the model's rule table as declared, its search space): from [tool.mnist-arch.models.NAME.rule] and
    .tune, or, for a model that declares no rule, from the command line's --threshold, --epochs, --consecutive."""
    from mnist_arch.project import read_table

    fields: Any = {}
    if project.path is not None and not model.source.startswith("--model"):
        fields = ((read_table(project.path) or {}).get("models") or {}).get(model.name) or {}
    rule, space = fields.get("rule"), fields.get("tune")
    given = {k: v for k, v in (("threshold", threshold), ("epochs", epochs), ("consecutive", consecutive))
             if v is not None}
    table = f"{project.path} [tool.mnist-arch.models.{model.name}.rule]"
    if rule is not None and given:
        raise MnistArchError(f"{table} states the rule already; --{next(iter(given))} would search for another one. "
                             "Change the table instead.")
    if rule is None:
        if "threshold" not in given or "epochs" not in given:
            add = (f"add [tool.mnist-arch.models.{model.name}.rule] with threshold = 0.994, epochs = 15 and "
                   "consecutive = 3 to pyproject.toml (docs/rule.md), or give them here:"
                   if not model.source.startswith("--model") else "give them here:")
            raise MnistArchError(
                f"{model.name} ({model.source}) declares no rule to tune for. A rule is a test accuracy to reach "
                "(threshold, e.g. 0.994) within at most so many epochs (epochs, e.g. 15), held for `consecutive` "
                f"epochs in a row (default 1): {add} --threshold 0.994 --epochs 15 --consecutive 3.")
        rule = given
    if not isinstance(rule, dict):
        raise MnistArchError(f"{table} must be a table, found {rule!r}.")
    return dict(rule), parse_space(space, f"{project.path} [tool.mnist-arch.models.{model.name}.tune]")
