"""Where a `mnist-arch tune` study lives, and who owns its trials (docs/tune.md, "Storage"): Optuna imported (or
the error naming the extra), the embedded journal beside pyproject.toml or a `--storage URL`, the study opened
and checked to be the same search (rule, fixed recipe fields, model code), each trial's owner and the failing of
trials whose owner died, the heartbeat on relational storage, and the lock a trial is claimed under. Nothing
here imports torch."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_arch.errors import MnistArchError

if TYPE_CHECKING:
    from mnist_arch.work import Declared

#: Where the embedded storage lives, beside pyproject.toml.
STORAGE_FOLDER = ".mnist-arch"
JOURNAL = "tune.journal"


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
        # "journal:~/x" is no word start for the shell: its ~ is expanded here
        path = default_storage(root) if url is None else Path(url.removeprefix("journal:")).expanduser().resolve()
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
def claim_lock(path: Path | None, lock: threading.Lock):
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
# The study: opened, and checked to be the same search


def model_code(model: Declared, root: Path) -> dict[str, str]:
    """What a study's trials trained, as it records it (study attr `model`): the model's class or factory name,
    and a digest of its file's syntax tree, so that a comment, the formatting or the line ends may change and
    the code may not. The file is read, never run; a module it imports is not read (docs/tune.md)."""
    source, _, attr = model.target.rpartition(":")
    from mnist_arch.paths import is_file_target

    if is_file_target(source):
        path = Path(source)
    else:  # package.module: the module's file under the folder it imports from, as the worker finds it
        base = (model.folder or root) / source.replace(".", "/")
        path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    try:
        data = path.read_bytes()
    except OSError:
        return {"model": attr, "code": "unreadable"}  # the worker will say why when it imports it
    try:
        tree = ast.dump(ast.parse(data)).encode("utf-8")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = data  # the worker will say why: the bytes stand for it meanwhile
    return {"model": attr, "code": hashlib.sha256(tree).hexdigest()[:16]}


def _changed(key: str, stored: Any, now: Any, source: str) -> str:
    """What changed since the study's trials ran, and why that makes them incomparable, in words."""
    if key == "rule":
        return (f"searched for another rule ({stored}); {source} states {now} now. Its trials would be judged by "
                "the wrong rule")
    if key == "fixed":
        return (f"trained its trials with other fields of the rule table outside the search ({stored}); {source} "
                f"gives {now} now. Its trials would be ranked against runs trained another way, and its best "
                "recipe would not be what the table runs")
    return (f"trained another version of {now['model']}: the code of its file has changed since (digest "
            f"{stored.get('code') if isinstance(stored, dict) else stored}, now {now['code']}; comments and "
            "formatting do not count). Its trials measured another network, so their best recipe says nothing "
            "about this one")


def open_study(optuna, storage, name: str, where: str, identity: Mapping[str, Any], source: str):
    """The study `name` (made where there is none), with the sampler and pruner of docs/tune.md. A study records
    what its trials were searched for (`identity`: its `rule`, the rule table's `fixed` fields outside the
    search, the `model`'s code, from `source`); the same name with another of them is an error once a trial has
    ended complete or pruned, since those trials would be judged, or ranked, against trials of another search.
    A study with none (all failed: a model fixed since), or made before one of them was recorded, takes today's.
    A changed search space is no such change: docs/tune.md says why."""
    sampler = optuna.samplers.TPESampler(multivariate=True, group=True, constant_liar=True, n_startup_trials=8)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=3)  # from epoch 3
    try:
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", sampler=sampler,
                                    pruner=pruner, load_if_exists=True)
    except Exception as exc:
        raise MnistArchError(f"The study {name!r} in {where} cannot be opened: {type(exc).__name__}: {exc}.") from None
    state = optuna.trial.TrialState
    measured = bool(study.get_trials(deepcopy=False, states=(state.COMPLETE, state.PRUNED)))
    for key, value in identity.items():
        stored, now = study.user_attrs.get(key), json.loads(json.dumps(value))  # as the storage gives it back
        if stored is None or (stored != now and not measured):  # no trial ran to an end: nothing to compare
            study.set_user_attr(key, now)
        elif stored != now:
            raise MnistArchError(f"The study {name!r} in {where} {_changed(key, stored, now, source)}: give this "
                                 "search a name of its own (--study NAME), or delete the study.")
    return study
