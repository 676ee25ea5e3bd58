"""The two ways a `UserProblem` runs its stacked models: all runs batched under vmap, or one at a time.

Apart from `user` so that the problem chooses once, at construction, from its vmap check
(`user_checks.check_vmap`), and `loss` / `evaluate` then run either without asking which. Both
strategies answer the same two questions with the same numbers as the runs alone: the per-run
losses of a minibatch (training mode; the buffers updated in place) and the per-run loss and correct
count over some rows (eval mode, gradients off: the caller's part).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import Tensor
from torch.func import vmap

from optarena.problems.user_data import Inputs, take

if TYPE_CHECKING:
    from optarena.problems.user import UserProblem

# Activations one evaluation chunk may hold, in elements (2**24 floats = 64 MiB in float32).
EVAL_BUDGET = 2**24


class Execution(Protocol):
    def losses(self, params: dict[str, Tensor], buffers: dict[str, Tensor], rows: Tensor, keys: Tensor) -> Tensor:
        """Each run's mean loss on its minibatch: rows (runs, batch_size), keys (runs,) its noise keys."""

    def metrics(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each run's mean loss on (x, y) and its count of correct rows (zeros without accuracy)."""


class Batched:
    """All runs in one vmap over the run dimension (a batch shared by all runs passed once); the runs
    of a stochastic model in one vmap(randomness="same") per noise seed."""

    def __init__(self, problem: UserProblem) -> None:
        self.problem = problem

    def losses(self, params, buffers, rows: Tensor, keys: Tensor) -> Tensor:
        problem = self.problem
        if not problem.stochastic:
            if rows.shape[0] == 1 or rows.stride(0) == 0:  # one batch (one seed) shared by all runs
                x, y, key, dim = take(problem.x_train, rows[0]), problem.y_train[rows[0]], keys[0], None
            else:
                x, y, key, dim = take(problem.x_train, rows), problem.y_train[rows], keys, 0
            return vmap(problem._run_loss, in_dims=(0, 0, dim, dim, dim))(params, buffers, key, x, y)
        return self._grouped_losses(params, buffers, rows, keys)

    def _grouped_losses(self, params, buffers, rows: Tensor, keys: Tensor) -> Tensor:
        """Runs that share a noise seed share their batch: one vmap(randomness="same") per seed."""
        problem = self.problem
        groups: dict[int, list[int]] = {}
        for r, s in enumerate(keys.tolist()):
            groups.setdefault(int(s), []).append(r)
        parts, order = [], []
        for s, members in groups.items():
            whole = len(groups) == 1
            idx = torch.tensor(members, device=problem.device)
            p = params if whole else {k: v[idx] for k, v in params.items()}
            b = buffers if whole else {k: v[idx] for k, v in buffers.items()}
            r0 = rows[members[0]]
            with problem._seeded(s):
                parts.append(vmap(problem._run_loss, in_dims=(0, 0, None, None, None), randomness="same")(
                    p, b, keys[members[0]], take(problem.x_train, r0), problem.y_train[r0]))
            if not whole:
                with torch.no_grad():
                    for k in buffers:
                        buffers[k][idx] = b[k]
            order.extend(members)
        losses = torch.cat(parts)
        return losses[torch.argsort(torch.tensor(order, device=losses.device))]

    def metrics(self, params, buffers, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        return vmap(self.problem._run_metrics, in_dims=(0, 0, None, None))(params, buffers, x, y)


class OneAtATime:
    """Each run alone with functional_call, its buffers views into the stacked ones (so in-place
    updates reach the state): the fallback where vmap cannot serve the model."""

    def __init__(self, problem: UserProblem) -> None:
        self.problem = problem

    def losses(self, params, buffers, rows: Tensor, keys: Tensor) -> Tensor:
        problem = self.problem
        losses = []
        for r in range(rows.shape[0]):
            p = {k: v[r] for k, v in params.items()}
            b = {k: v[r] for k, v in buffers.items()}  # views: in-place updates reach the state
            with problem._seeded(int(keys[r])):
                losses.append(problem._run_loss(p, b, keys[r], take(problem.x_train, rows[r]), problem.y_train[rows[r]]))
        return torch.stack(losses)

    def metrics(self, params, buffers, x: Inputs, y: Tensor) -> tuple[Tensor, Tensor]:
        runs = next(iter(params.values())).shape[0]
        pairs = [self.problem._run_metrics({k: v[r] for k, v in params.items()}, {k: v[r] for k, v in buffers.items()}, x, y)
                 for r in range(runs)]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
