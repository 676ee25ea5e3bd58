"""The default loss of a user's problem, and the tensor of a model's output it reads.

A model may return a Tensor, a tuple / list, or a dict (a Hugging Face-style ``{"logits": ...}``,
``ModelOutput`` included). A user's ``loss(output, target)`` receives exactly what the model
returned; the default loss and the accuracy read `primary_output`: ``output["logits"]`` of a dict
(else its first tensor value), the first element of a tuple or list.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from optarena.problems.user_data import first_tensor


def primary_output(output: Any) -> Tensor:
    """The tensor the default loss and the accuracy read; TypeError when there is none."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if isinstance(output.get("logits"), Tensor):
            return output["logits"]
        found = first_tensor(list(output.values()))
    elif isinstance(output, (tuple, list)):
        found = first_tensor(output[0]) if output else None
    else:
        raise TypeError(f"a model output must be a Tensor, a tuple / list or a dict, got {type(output).__name__}")
    if found is None:
        raise TypeError(f"the model output ({type(output).__name__}) holds no tensor in its first place")
    return found


def default_loss(output: Any, target: Tensor) -> Tensor:
    """Cross-entropy for integer targets, mean squared error for float targets, on `primary_output`."""
    output = primary_output(output)
    if not target.is_floating_point():
        return F.cross_entropy(output, target)
    if output.shape != target.shape and output.numel() == target.numel():
        output = output.reshape(target.shape)  # (B, 1) against (B,): the usual regression head
    if output.shape != target.shape:
        raise ValueError(
            f"the output shape {tuple(output.shape)} does not match the target shape {tuple(target.shape)}: "
            "mean squared error needs one output number per target number"
        )
    return F.mse_loss(output, target)
