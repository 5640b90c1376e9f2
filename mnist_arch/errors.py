"""The one exception type a user sees: a paragraph that says what was wrong and what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class MnistArchError(Exception):
    """Bad input (a file, a number, a model that cannot be built or run).

    The command line prints the message as one paragraph on stderr and exits with code 2;
    library callers get the same message from the exception.
    """


def ours(what: str | Callable[[], str], func: Callable[..., Any], *args: Any, advice: str = "",
         error: type[MnistArchError] = MnistArchError) -> Any:
    """`func(*args)`, a step of mnist-arch's own inside a worker (`what` says which, as "the recipe's
    optimizer (...)" or "saving the checkpoint to x.pt"; a function giving it where the step runs every
    training step, so that the words are made only when something raised). Whatever it raises becomes one
    paragraph that puts the fault where it is, instead of the worker's "the model's code raised"."""
    try:
        return func(*args)
    except MnistArchError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        said = what() if callable(what) else what
        raise error(f"mnist-arch's own set-up failed, not the model's code: {said} raised {type(exc).__name__}: "
                    f"{first}.{advice}") from None


def one_line(value: object, limit: int = 2000) -> str:
    """str(value) as one bounded line, whatever the value's __str__ does (a model's exception may do anything)."""
    try:
        text = str(value)
    except Exception:
        text = f"<{type(value).__name__} whose message cannot be shown>"
    text = " | ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit:,} more characters)"
