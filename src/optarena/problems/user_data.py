"""The data of a user's problem: reading the splits, the checks on all of their rows, and the few
operations on model inputs of any accepted structure.

Inputs ``X`` are a tensor (the model is called ``model(X)``), a tuple (or list) of tensors
(``model(*X)``) or a dict of tensors (``model(**X)``); every tensor of X has one row per target.
A split is ``(X, y)`` of tensors or arrays, or a ``torch.utils.data.Dataset`` whose items are
``(x, y)`` pairs, x structured the same way (a tensor, a tuple or a dict), materialised once.
Floating-point inputs and float targets are cast to the model's parameter dtype, integer (and
bool) inputs are kept, integer targets become int64 and bool targets floats.

Checks, before any training, on every row of both splits: no NaN or infinity in any
floating-point input or target; the same structure and dtypes in both splits (a tuple against a
dict, int64 against float targets); classification labels in range (`check_labels`, given the
number of classes the model outputs).
"""

from __future__ import annotations

from typing import Any, Union

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_leaves, tree_map, tree_unflatten

from optarena.problems.user_errors import UserCodeError, describe, shape

Inputs = Union[Tensor, tuple, dict]

MAX_DATA_BYTES = 2**31
# Elements scanned at once by the finiteness check (bounds its temporary memory).
SCAN_ELEMENTS = 2**24


# ---- operations on inputs of any structure ----


def n_rows(x: Inputs) -> int:
    return len(tree_leaves(x)[0])


def take(x: Inputs, index: Any) -> Inputs:
    """Rows `index` (a slice, or row numbers of any shape) of every tensor of x."""
    return tree_map(lambda t: t[index], x)


def call_args(x: Inputs) -> tuple[tuple, dict]:
    """(args, kwargs) of the model's call on x: model(X), model(*X) or model(**X)."""
    if isinstance(x, dict):
        return (), x
    if isinstance(x, tuple):
        return x, {}
    return (x,), {}


def call_text(x: Inputs) -> str:
    return "model(**X)" if isinstance(x, dict) else "model(*X)" if isinstance(x, tuple) else "model(X)"


def named_leaves(x: Inputs) -> list[tuple[str, Tensor]]:
    """("X", t), ("X[0]", t), ("X['ids']", t), ... in call order."""
    if isinstance(x, dict):
        return [(f"X[{k!r}]", t) for k, t in x.items()]
    if isinstance(x, tuple):
        return [(f"X[{i}]", t) for i, t in enumerate(x)]
    return [("X", x)]


def describe_inputs(x: Inputs) -> str:
    return ", ".join(f"{name} {shape(t)}" for name, t in named_leaves(x))


# ---- reading a split ----


def read_split(split: Any, which: str, dtype: torch.dtype, device: torch.device) -> tuple[Inputs, Tensor]:
    """(X, y) of one split, on `device`, checked for shape and size (see the module docstring)."""
    where = f"data(): the {which} split"
    if isinstance(split, (tuple, list)):
        if len(split) != 2:
            raise UserCodeError(f"{where} must be (X, y), got a {type(split).__name__} of length {len(split)}")
        x = _inputs(split[0], where)
        y = _tensor(split[1], where, "y")
    elif hasattr(split, "__getitem__") and hasattr(split, "__len__"):
        x, y = _materialise(split, where)
    else:
        raise UserCodeError(f"{where} must be (X, y) or a torch.utils.data.Dataset, got {type(split).__name__}")
    leaves = named_leaves(x)
    if y.ndim == 0 or len(y) == 0 or any(t.ndim == 0 or len(t) != len(y) for _, t in leaves):
        raise UserCodeError(f"{where}: X and y need the same number of rows (>= 1), got "
                            f"{describe_inputs(x)} and y {shape(y)}")
    size = sum(t.numel() * t.element_size() for t in tree_leaves((x, y)))
    if size > MAX_DATA_BYTES:
        raise UserCodeError(f"{where} holds {size / 2**30:.1f} GiB; the limit is {MAX_DATA_BYTES / 2**30:.0f} GiB (pass a subset)")
    x = tree_map(lambda t: t.to(device, dtype) if t.is_floating_point() else t.to(device), x)
    if y.is_floating_point() or y.dtype == torch.bool:
        y = y.to(device, dtype)
    else:
        y = y.to(device, torch.long)
    return x, y


def _tensor(value: Any, where: str, name: str) -> Tensor:
    try:
        return torch.as_tensor(value)
    except Exception as e:
        raise UserCodeError(f"{where}: {name} must be a tensor or an array ({describe(e)})") from e


def _inputs(value: Any, where: str) -> Inputs:
    """X as a tensor, a tuple of tensors or a dict of tensors."""
    if isinstance(value, dict):
        if not value or not all(isinstance(k, str) for k in value):
            raise UserCodeError(f"{where}: a dict X needs at least one entry, each under a string key (model(**X))")
        return {k: _tensor(v, where, f"X[{k!r}]") for k, v in value.items()}
    # A list of tensors or arrays is several inputs, like a tuple; a list of numbers is a tensor.
    if isinstance(value, tuple) or (isinstance(value, list) and value
                                    and all(isinstance(v, Tensor) or hasattr(v, "__array__") for v in value)):
        if not value:
            raise UserCodeError(f"{where}: a tuple X needs at least one tensor (model(*X))")
        return tuple(_tensor(v, where, f"X[{i}]") for i, v in enumerate(value))
    try:
        return torch.as_tensor(value)
    except Exception as e:
        raise UserCodeError(f"{where}: X must be a tensor or an array, a tuple of them (model(*X)) or a dict "
                            f"of them (model(**X)), got {type(value).__name__} ({describe(e)})") from e


def _materialise(dataset: Any, where: str) -> tuple[Inputs, Tensor]:
    n = len(dataset)
    if n == 0:
        raise UserCodeError(f"{where} is an empty Dataset")
    columns: list[list[Tensor]] = []
    ys: list[Tensor] = []
    spec = None
    for i in range(n):
        try:
            x, y = dataset[i]
            x, y = _inputs(x, where), torch.as_tensor(y)
        except UserCodeError as e:
            raise UserCodeError(f"{where}: Dataset item {i}: {e.message.removeprefix(where + ': ')}") from e
        except Exception as e:
            raise UserCodeError(f"{where}: Dataset item {i} is not an (x, y) pair of tensors ({describe(e)})") from e
        leaves, item_spec = tree_flatten(x)
        if spec is None:
            spec, columns = item_spec, [[] for _ in leaves]
            item_bytes = sum(t.numel() * t.element_size() for t in leaves + [y])
            if n * item_bytes > MAX_DATA_BYTES:
                raise UserCodeError(f"{where}: the Dataset would take more than {MAX_DATA_BYTES / 2**30:.0f} GiB in memory (pass a subset)")
        elif item_spec != spec:
            raise UserCodeError(f"{where}: Dataset item {i}'s x is structured differently from item 0's "
                                f"({item_spec} against {spec})")
        for column, t in zip(columns, leaves):
            column.append(t)
        ys.append(y)
    try:
        x = tree_unflatten([torch.stack(column) for column in columns], spec)
        return x, torch.stack(ys)
    except Exception as e:
        raise UserCodeError(f"{where}: Dataset items differ in shape ({describe(e)})") from e


# ---- checks on all the data ----


def check_finite(x: Inputs, y: Tensor, which: str) -> None:
    """Every floating-point value of the split is finite, or UserCodeError naming the tensor and rows."""
    for name, t in named_leaves(x) + [("y", y)]:
        if not t.is_floating_point():
            continue
        flat = t.reshape(len(t), -1)
        step = max(1, SCAN_ELEMENTS // max(1, flat.shape[1]))
        bad_rows = torch.cat([(~torch.isfinite(flat[i:i + step])).any(1) for i in range(0, len(flat), step)])
        if bool(bad_rows.any()):
            rows = torch.nonzero(bad_rows).flatten()
            first = int(rows[0])
            values = t[first].reshape(-1)
            kind = "NaN" if bool(torch.isnan(values).any()) else "infinity"
            raise UserCodeError(
                f"data(): the {which} split: {name} holds {kind} in {len(rows)} of {len(t)} rows, the first at row "
                f"{first}; drop or impute those rows"
            )


def check_same_kind(train: tuple[Inputs, Tensor], val: tuple[Inputs, Tensor]) -> None:
    """The splits have the same input structure and dtypes, and targets of the same dtype and rank."""
    (x_train, y_train), (x_val, y_val) = train, val
    names_train, names_val = [n for n, _ in named_leaves(x_train)], [n for n, _ in named_leaves(x_val)]
    if names_train != names_val or type(x_train) is not type(x_val):
        raise UserCodeError(f"data(): the val split's X ({describe_inputs(x_val)}) is not structured like the "
                            f"train split's ({describe_inputs(x_train)})")
    for (name, a), (_, b) in zip(named_leaves(x_train), named_leaves(x_val)):
        if a.dtype != b.dtype or a.ndim != b.ndim:
            raise UserCodeError(f"data(): {name} is {shape(a)} in the train split but {shape(b)} in the val split; "
                                "both splits need the same dtype and number of dimensions")
    if y_train.dtype != y_val.dtype or y_train.ndim != y_val.ndim:
        def kind(y: Tensor) -> str:
            return "integer labels (classification)" if not y.is_floating_point() else "float targets"
        raise UserCodeError(f"data(): the targets are {kind(y_train)} {shape(y_train)} in the train split but "
                            f"{kind(y_val)} {shape(y_val)} in the val split; give both splits the same target type")


def check_labels(y: Tensor, classes: int, which: str, what: str) -> None:
    """Integer labels of one split in 0 .. classes - 1."""
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        raise UserCodeError(f"data(): the {which} split: labels run from {low} to {high} but the model outputs "
                            f"{classes} classes; {what} needs labels in 0 .. {classes - 1}")


def first_tensor(value: Any) -> Tensor | None:
    leaves = [t for t in tree_leaves(value) if isinstance(t, Tensor)]
    return leaves[0] if leaves else None
