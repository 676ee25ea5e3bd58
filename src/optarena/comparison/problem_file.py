"""The problem file of ``optarena compare FILE.py``: imported, its functions and constants checked."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from optarena.problems.user import UserCodeError


@dataclass
class ProblemFile:
    """What a problem file defines."""

    path: Path
    model: Callable[[], torch.nn.Module]
    data: Callable[[], Any]
    loss: Callable | None = None
    batch_size: int | None = None
    steps: int | None = None

    @property
    def name(self) -> str:
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.path.stem) or "user"


def load_problem_file(path: str | os.PathLike) -> ProblemFile:
    """Import a problem file (importlib, its folder first on sys.path); UserCodeError on bad input."""
    path = Path(path)
    if not path.is_file():
        raise UserCodeError("no such file" if not path.exists() else "not a file")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:8]
    module_name = f"optarena_problem_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserCodeError("cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look the module up here
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    except BaseException as e:  # SystemExit from the file included; KeyboardInterrupt passes
        sys.modules.pop(module_name, None)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise UserCodeError(f"importing the file raised {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}".rstrip(": ")) from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)
    missing = [f"{n}()" for n in ("model", "data") if not callable(getattr(module, n, None))]
    if missing:
        raise UserCodeError(
            f"defines no {' and no '.join(missing)} function; a problem file must define "
            "model() -> torch.nn.Module and data() -> (train, val)")
    loss = getattr(module, "loss", None)
    if loss is not None and not callable(loss):
        raise UserCodeError(f"loss must be a function loss(output, target) -> Tensor, got {type(loss).__name__}")
    constants = {}
    for constant in ("batch_size", "steps"):
        value = getattr(module, constant, None)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UserCodeError(f"the constant {constant} must be an integer >= 1, got {value!r}")
        constants[constant] = value
    return ProblemFile(path, module.model, module.data, loss, **constants)
