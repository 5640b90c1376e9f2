"""Model targets (`PATH.py:ATTR` or `package.module:ATTR`, parsed in `mnist_arch.paths`) built by `load_model`
inside a worker, with errors a user can act on.

ATTR may be an `nn.Module` subclass or a function taking no arguments (both are called), or an
`nn.Module` instance (used as it is).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mnist_arch.channel import phase
from mnist_arch.errors import MnistArchError
from mnist_arch.paths import is_file_target

if TYPE_CHECKING:
    import torch.nn as nn

_FORM = "Give the model as PATH.py:ATTR (e.g. my_net.py:Net) or package.module:ATTR."


def _where_in(path: Path | None, exc: BaseException) -> str:
    """' (line N)' for the deepest traceback frame inside the user's file."""
    if path is None:
        return ""
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if Path(f.filename) == path]
    return f" (line {lines[-1]})" if lines else ""


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise MnistArchError(f"Model file {path} does not exist. {_FORM}")
    module_name = f"mnist_arch_user_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise MnistArchError(f"Model file {path} cannot be imported as Python (is it a .py file?).")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise MnistArchError(
            f"Model file {path} does not import: syntax error at line {exc.lineno}: {exc.msg}."
        ) from None
    except Exception as exc:
        raise MnistArchError(
            f"Model file {path} does not import: {type(exc).__name__}: {exc}{_where_in(path, exc)}."
        ) from None
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _import_module(dotted: str) -> Any:
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as exc:
        raise MnistArchError(f"Module {dotted} cannot be found ({exc}). {_FORM}") from None
    except Exception as exc:
        raise MnistArchError(f"Module {dotted} does not import: {type(exc).__name__}: {exc}.") from None


def load_model(target: str) -> nn.Module:
    """The model named by `target`, built and ready to judge (in a worker: it runs the model's code)."""
    import torch.nn as nn

    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        raise MnistArchError(f"--model {target!r} has no ':ATTR' part. {_FORM}")
    path = Path(source) if is_file_target(source) else None
    phase("import")
    module = _import_file(path) if path else _import_module(source)
    where = str(path) if path else f"module {source}"

    if not hasattr(module, attr):
        modules = sorted(n for n, v in vars(module).items()
                         if inspect.isclass(v) and issubclass(v, nn.Module) and v.__module__ == module.__name__)
        hint = f" It defines these nn.Module classes: {', '.join(modules)}." if modules else ""
        raise MnistArchError(f"{where} has no attribute {attr!r}.{hint}")
    obj = getattr(module, attr)
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise MnistArchError(f"{where}:{attr} is a {type(obj).__name__}, not an nn.Module, a class or a "
                             "function that returns one.")
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        signature = None
    if signature is not None:
        required = [p.name for p in signature.parameters.values()
                    if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                           p.KEYWORD_ONLY)]
        if required:
            raise MnistArchError(
                f"{where}:{attr} needs arguments ({', '.join(required)}) and mnist-arch builds models "
                f"with none. Add a function that builds it, e.g. `def build(): return {attr}(...)`, "
                f"and pass {source}:build."
            )
    phase("build")
    try:
        model = obj()
    except Exception as exc:
        raise MnistArchError(
            f"Building {where}:{attr}() raised {type(exc).__name__}: {exc}{_where_in(path, exc)}."
        ) from None
    if not isinstance(model, nn.Module):
        raise MnistArchError(f"{where}:{attr}() returned a {type(model).__name__}, not an nn.Module.")
    return model
