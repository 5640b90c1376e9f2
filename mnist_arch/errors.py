"""The one exception type a user sees: a paragraph that says what was wrong and what to do."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class MnistArchError(Exception):
    """Bad input (a file, a number, a model that cannot be built or run).

    The command line prints the message as one paragraph on stderr and exits with code 2;
    library callers get the same message from the exception.
    """


def ours(what: str, func: Callable[..., Any], *args: Any, advice: str = "",
         error: type[MnistArchError] = MnistArchError) -> Any:
    """`func(*args)`, a step of mnist-arch's own inside a worker (`what` says which, as "the recipe's
    optimizer (...)" or "saving the checkpoint to x.pt"). Whatever it raises becomes one paragraph that puts
    the fault where it is, instead of the worker's "the model's code raised" for any exception."""
    try:
        return func(*args)
    except MnistArchError:
        raise
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:500] if str(exc).strip() else ""
        raise error(f"mnist-arch's own set-up failed, not the model's code: {what} raised {type(exc).__name__}: "
                    f"{first}.{advice}") from None
