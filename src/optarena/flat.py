"""Flat storage of a parameter group, for ``fused=True``: the compiled rule in one call per group.

`optarena.fused` compiles an elementwise rule's ``update_`` into one kernel, but each call of the
compiled function costs about 120 us of torch.compile's wrapper and guards for 8 tensors, so a model
of many tensors pays that cost once per 8 of them (and small tensors were concatenated and copied
back every step). torch.optim's fused kernels loop over the tensors in C++ instead. Here the group's
tensors are made views of one flat buffer each, as apex's and DeepSpeed's contiguous parameters
are:

    param p_i  := P[o_i : o_i + n_i].view_as(p_i)      (``p.data`` re-pointed once)
    state s_ik := S_k[o_i : o_i + n_i].view_as(p_i)    (every state tensor shaped like its parameter)
    grad  g_i  -> G[o_i : o_i + n_i]                    (copied in each step, unless it is a view already)

so that ``rule.update_(P, G, {k: S_k}, step)`` is the whole group's update in one compiled call, the
same formula element by element (or, for a group under `fused.MIN_COMPILED_VALUES` values, the
eager rule over the flat buffers: one pass per operation, bitwise the per-tensor rule). The
gradients stay the user's: a gradient that is not yet a view of G (``zero_grad()`` sets it to None
and backward makes a new one) is copied into G and replaced by its view, so that with
``zero_grad(set_to_none=False)`` backward accumulates into G in place and the copy disappears.

A group is flattened only where every parameter is dense, real (not the real view of a complex
one), contiguous, of one dtype and device, has a gradient this step, the same step count, and state shaped like itself or 0-d with the same
value in every parameter (NAdam's ``mu_product``, a function of the step count: the rule updates the
first parameter's, which is then copied into the others'); otherwise `optim` takes the per-tensor
compiled path. Anything that re-points a
parameter or a state tensor afterwards (``load_state_dict``, ``p.data = ...``, ``model.to(...)``) is
noticed at the next step (`FlatGroup.holds`) and the group is flattened again from the new tensors.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from itertools import repeat

import torch
from torch import Tensor

_GRAD = operator.attrgetter("grad")


def all_grads(params: Sequence[Tensor]) -> list[Tensor] | None:
    """Every parameter's gradient, or None where one has none. With `map` over C functions: this
    runs for every parameter every step, and as a generator expression it cost more than a small
    group's update."""
    grads = list(map(_GRAD, params))
    return None if any(map(operator.is_, grads, repeat(None))) else grads


def eligible(params: Sequence[Tensor], grads: Sequence[Tensor], states: Sequence[dict]) -> bool:
    """Whether the group can live in flat storage this step (see the module docstring)."""
    if len(params) < 2:
        return False  # one tensor is flat already
    p0 = params[0]
    keys = [k for k in states[0] if k != "step"]
    for p, g, s in zip(params, grads, states):
        if (p.dtype != p0.dtype or p.device != p0.device or p.is_complex() or p._is_view() or not p.is_contiguous()
                or g.is_sparse or g.dtype != p.dtype or g.shape != p.shape or g.device != p.device):
            return False
        if [k for k in s if k != "step"] != keys or s.get("step") != states[0].get("step"):
            return False
        for k in keys:
            v = s[k]
            if not isinstance(v, Tensor):
                return False
            if v.ndim == 0:  # one value per parameter (NAdam's mu_product): the same in all of them
                first = states[0][k]
                if v.dtype != first.dtype or v.device != first.device or not torch.equal(v, first):
                    return False
            elif v.shape != p.shape or v.dtype != p.dtype:
                return False
    return True


class FlatGroup:
    """The flat buffers of one group: parameters, gradients and each state key."""

    def __init__(self, params: Sequence[Tensor], states: Sequence[dict]) -> None:
        p0 = params[0]
        self.params = list(params)
        self.states = list(states)
        self.keys = [k for k in states[0] if k != "step" and states[0][k].ndim > 0]  # flattened
        self.scalar_keys = [k for k in states[0] if k != "step" and states[0][k].ndim == 0]
        sizes = [p.numel() for p in params]
        n = sum(sizes)
        with torch.no_grad():
            self.param = torch.empty(n, dtype=p0.dtype, device=p0.device)
            self.grad = torch.zeros(n, dtype=p0.dtype, device=p0.device)
            self.state = {k: torch.empty(n, dtype=p0.dtype, device=p0.device) for k in self.keys}
            param_views = _views(self.param, params)
            torch._foreach_copy_(param_views, [p.detach() for p in params])
            for p, v in zip(params, param_views):
                p.data = v
            for k in self.keys:
                views = _views(self.state[k], params)
                torch._foreach_copy_(views, [s[k] for s in states])
                for s, v in zip(states, views):
                    s[k] = v
        self.grad_views = _views(self.grad, params)
        self._param_ptrs = [p.data_ptr() for p in params]
        self._grad_ptrs = [v.data_ptr() for v in self.grad_views]
        self._state_views = [[s[k] for k in self.keys + self.scalar_keys] for s in states]

    def kernel_state(self) -> dict[str, Tensor]:
        """The state the rule updates: the flat buffers, and the first parameter's 0-d values
        (the others get them after the step, `sync_scalars`)."""
        return {**self.state, **{k: self.states[0][k] for k in self.scalar_keys}}

    def sync_scalars(self) -> None:
        """Copy the 0-d state the rule updated (the first parameter's) into every other parameter's."""
        for k in self.scalar_keys:
            first = self.states[0][k]
            torch._foreach_copy_([s[k] for s in self.states[1:]], [first] * (len(self.states) - 1))

    def holds(self, params: Sequence[Tensor], states: Sequence[dict]) -> bool:
        """Whether `params` and `states` are still exactly the tensors of this flat storage."""
        if len(params) != len(self.params) or any(p is not q for p, q in zip(params, self.params)):
            return False
        if [p.data_ptr() for p in params] != self._param_ptrs:
            return False
        return all(s is t and all(s.get(k) is v for k, v in zip(self.keys + self.scalar_keys, views))
                   for s, t, views in zip(states, self.states, self._state_views))

    def ready_grads(self, params: Sequence[Tensor]) -> Tensor | None:
        """The per-step check and gather of the fast path: G (every gradient that is not yet its view
        copied in and replaced by its view) where `params` are this storage's parameters, not
        re-pointed, each with a gradient; else None. The state dicts are not looked at here:
        `optim`'s ``load_state_dict`` drops the flat storage (a state tensor replaced by hand is not
        noticed). Written with `map` over C functions: as generator expressions these checks took
        90 us a step for 100 parameters."""
        if not (len(params) == len(self.params) and all(map(operator.is_, params, self.params))
                and list(map(Tensor.data_ptr, params)) == self._param_ptrs):
            return None
        grads = all_grads(params)
        if grads is None:
            return None
        if list(map(Tensor.data_ptr, grads)) != self._grad_ptrs:
            stale = [(p, g, v) for p, g, v, ptr in zip(params, grads, self.grad_views, self._grad_ptrs)
                     if g.data_ptr() != ptr]
            with torch.no_grad():
                torch._foreach_copy_([v for _, _, v in stale], [g for _, g, _ in stale])
            for p, _, v in stale:
                p.grad = v
        return self.grad

    def advance(self) -> int:
        """Count one step in every parameter's state; the new step count."""
        step = self.states[0]["step"] + 1
        for s in self.states:
            s["step"] = step
        return step

def _views(flat: Tensor, like: Sequence[Tensor]) -> list[Tensor]:
    views, offset = [], 0
    for p in like:
        views.append(flat[offset:offset + p.numel()].view(p.shape))
        offset += p.numel()
    return views
