"""torch.optim drop-ins built from the rules: ``optarena.optim.Adam(model.parameters(), lr=1e-3)``.

One generic `RuleOptimizer` does the work (param groups, state_dict, LR schedulers, closures,
sparse gradients, ``eval()`` / ``train()`` for rules with an evaluation point); the public classes
(``SGD``, ``Adam``, ...) are made from the registry (``optarena.rules.registry``), one per
optimizer, with torch-style signatures. Hyperparameters left as ``None`` take the chosen
convention's defaults.

Under convention="pytorch", ``foreach=True`` and ``fused=True`` run the eight optimizers torch.optim
has on torch.optim's own kernels (`optarena.torch_kernels`), with its speed and bits, except that
``fused=True`` on a group under `fused.MIN_COMPILED_VALUES` values runs the eager rule over the
group's flat storage as the other conventions do (faster there than any fused kernel: its
per-tensor work and call cost exceed the update; the numbers of the default path, bit for bit);
the default runs the rule (``optarena.rules``), the engine's numbers bit for bit.

As torch.optim, every class takes ``maximize`` (the gradient negated), ``foreach`` (``None``, the
default: the small tensors of a group go through the rule as one flat tensor, same numbers as one
at a time; ``False``: one by one), ``fused`` (``True``: the rule's own ``update_`` compiled by
``torch.compile`` into one fused kernel per rule, dtype and device, see `optarena.fused`, for the
elementwise rules, one call per group: the group's parameters and state are made views of one flat
buffer each at its first step, `optarena.flat`; the numbers equal the eager rule's up to float
rounding; the first step compiles, seconds, cached on disk by inductor; a group under
`fused.MIN_COMPILED_VALUES` values runs the eager rule instead, over its flat buffers where it has
them, bit for bit the default path; the rules that act on whole tensors, Muon, SOAP, Adafactor,
LAMB and Schedule-Free, refuse it),
``capturable`` (the step count a tensor on the parameter's device; CPU parameters refused at
``step()``, as torch does) and ``differentiable`` (only ``False``). ``state["step"]`` is a Python int
in eager mode and a 0-d tensor once the step is run under ``torch.compile`` (so that one graph
serves every step) or capturable. Under convention="pytorch", ``load_state_dict`` also takes a
torch.optim state_dict of the same optimizer (its state names mapped, see `TORCH_STATE_NAMES`) and
``torch_state_dict()`` gives one that torch.optim loads.
"""

from __future__ import annotations

import inspect
import operator
from typing import Any, Callable, ClassVar, Iterable, NamedTuple

import torch
from torch import Tensor

from optarena import flat as flat_storage
from optarena import fused as compiled
from optarena import rules, torch_kernels
from optarena.rules.base import Rule, any_nonzero, update_at_

_ABSENT = object()
_IS_SPARSE = operator.attrgetter("is_sparse")


class _Plan(NamedTuple):
    """A group's rule for its current hyperparameters (`key`), and whether the fused path can
    compile it (`fused.supports`) and torch.optim's kernels run it (`torch_kernels.handles`)."""

    key: tuple
    rule: Rule
    compiles: bool
    torch_kernels: bool


_RULE_NAMES: dict[tuple[str, str], tuple[str, ...]] = {}


def _rule_names(name: str, convention: str) -> tuple[str, ...]:
    """The group keys that are `name`'s hyperparameters under `convention` (torch's ``betas`` too).
    A plain dict, not functools.cache: dynamo traces this when a step is compiled."""
    names = _RULE_NAMES.get((name, convention))
    if names is None:
        names = _RULE_NAMES[name, convention] = tuple(sorted(set(rules.defaults(name, convention)) | {"betas"}))
    return names


def _small(params: list[Tensor]) -> bool:
    """Whether a group is under `fused.MIN_COMPILED_VALUES` values: with ``fused=True`` it is then
    updated by the eager rule over its flat storage (one pass per operation over all of it), faster
    than a fused kernel's per-tensor work and call costs there."""
    return sum(map(Tensor.numel, params)) < compiled.MIN_COMPILED_VALUES


def _any_sparse(grads: list[Tensor]) -> bool:
    if torch.compiler.is_compiling():  # dynamo traces the plain loop (`map` of an attrgetter breaks its graph)
        return any(g.is_sparse for g in grads)
    return any(map(_IS_SPARSE, grads))


class RuleOptimizer(torch.optim.Optimizer):
    """A torch.optim.Optimizer that applies ``rules.get(rule_name, convention, **group)`` per group."""

    rule_name: ClassVar[str] = ""

    def __init__(self, params: Iterable, *, convention: str = "article", maximize: bool = False,
                 foreach: bool | None = None, fused: bool | None = None, capturable: bool = False,
                 differentiable: bool = False, **hparams: Any) -> None:
        name = type(self).__name__
        if foreach and fused:
            raise RuntimeError(f"{name}: `fused` and `foreach` cannot be `True` together (as in torch.optim)")
        if differentiable:
            raise ValueError(f"{name}: differentiable=True is not supported: the rules update the parameters in "
                             "place under torch.no_grad(); use differentiable=False (the default)")
        given = {k: v for k, v in hparams.items() if v is not None}
        defaults = rules.resolve(self.rule_name, convention, **given)
        if fused and not rules.entry(self.rule_name).conventions[convention].rule.elementwise:
            raise RuntimeError(f"{name}: fused=True is for the elementwise rules; {name} acts on whole tensors "
                               "(norms, factored or matrix statistics): use fused=None (the default)")
        if "beta1" in defaults:  # present them as torch does
            defaults["betas"] = (defaults.pop("beta1"), defaults.pop("beta2"))
        defaults["convention"] = convention
        defaults.update(maximize=bool(maximize), foreach=foreach, fused=fused, capturable=bool(capturable),
                        differentiable=False)
        super().__init__(params, defaults)
        self._plans: dict[int, _Plan] = {}  # group index -> its rule and execution choices
        self._flat: dict[int, flat_storage.FlatGroup] = {}  # fused=True: group index -> its flat storage
        self._at_eval_point = False

    def _plan(self, index: int, group: dict) -> "_Plan":
        """The group's rule and what its step takes from it, rebuilt only when one of the rule's
        hyperparameters or the group's ``foreach`` / ``fused`` changed (a scheduler's lr, a user's
        edit): this runs every step, beside kernels of microseconds."""
        convention = group["convention"]
        names = _rule_names(self.rule_name, convention)
        # Groups also carry keys of others (e.g. a scheduler's "initial_lr"): the rule's own only.
        values = [group.get(k, _ABSENT) for k in names]
        key = (convention, group.get("foreach"), group.get("fused"),
               *[v.item() if isinstance(v, Tensor) else v for v in values])
        cached = self._plans.get(index)
        if cached is None or cached.key != key:
            rule = rules.build(self.rule_name, convention,
                               **{k: v for k, v in zip(names, values) if v is not _ABSENT})
            cached = self._plans[index] = _Plan(key, rule, compiled.supports(rule),
                                                     torch_kernels.handles(self.rule_name, rule, group))
        return cached

    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        name = type(self).__name__
        compiling = torch.compiler.is_compiling()
        for index, group in enumerate(self.param_groups):
            plan = self._plan(index, group)
            rule = plan.rule
            if self._at_eval_point and rule.has_eval_point:
                # gradients were taken at the evaluation point, not where the rule takes them
                raise RuntimeError(f"{name}.step() called after optimizer.eval(); "
                                   "call optimizer.train() before training again")
            capturable = group.get("capturable", False)
            if capturable and not compiling:
                _check_capturable(group["params"], name)
            # The step count: a Python int in eager mode (the numbers are those of a Python bias
            # correction 1 - beta**t, as torch.optim's for-loop / foreach paths); a tensor once
            # compiled or capturable, so that dynamo builds one graph for every step (an int would
            # be a constant it recompiles for) and capturable needs no host sync.
            tensor_step = compiling or capturable
            flat = self._flat.get(index)
            grads = (flat.ready_grads(group["params"])
                     if flat is not None and group.get("fused") and not tensor_step
                     else None)
            if grads is not None:
                _flat_update_(rule, flat, grads.neg() if group.get("maximize", False) else grads, flat.advance())
                continue
            live, grads = _live(group["params"], compiling)
            if plan.torch_kernels and not _any_sparse(grads) and not (
                    group.get("fused") and not tensor_step and _small(live)):
                self._torch_step_(rule, group, live, grads)
                continue
            maximize = group.get("maximize", False)
            members = []
            for param in group["params"]:
                if param.grad is None:
                    continue
                p, grad = _real(param, rule, name), param.grad
                if torch.is_complex(grad) and not grad.is_sparse:
                    grad = torch.view_as_real(grad)
                if maximize:
                    grad = -grad
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state.update(_tensor_state(rule, p))
                count = state["step"]
                if isinstance(count, Tensor):  # compiled or capturable before, or loaded from torch.optim
                    count.add_(1)
                    step = count if tensor_step else int(count.item())
                elif tensor_step:
                    count = state["step"] = torch.tensor(count + 1.0, dtype=torch_kernels.step_dtype(fused=False),
                                                         device=param.device if capturable else "cpu")
                    step = count
                else:
                    step = state["step"] = count + 1
                members.append((p, grad, state, step))
            if group.get("fused") and not tensor_step and plan.compiles:
                if len(members) == len(group["params"]) and self._flat_step_(index, rule, members, maximize):
                    continue
                self._flat.pop(index, None)
                if not _small([m[0] for m in members]):  # else the eager rule below is faster
                    dense = []
                    for p, grad, state, step in members:
                        if grad.is_sparse:
                            self._apply_sparse(rule, p, grad, state, step)
                        else:
                            dense.append((p, grad, {k: v for k, v in state.items() if k != "step"}, step))
                    if dense:
                        _fused_update_(rule, dense)
                    continue
            batches: dict[int, list] = {}
            batchable = not tensor_step and _batchable(rule, group)
            for p, grad, state, step in members:
                if grad.is_sparse:
                    self._apply_sparse(rule, p, grad, state, step)
                elif batchable and p.numel() < _BATCH_ELEMENTS and len(state) > 1:  # a state beyond the step
                    batches.setdefault((step, p.dtype, p.device), []).append((p, grad, state))
                elif rule.elementwise:
                    rule.update_(p, grad, state, step)
                else:
                    rule.update_(p.unsqueeze(0), grad.unsqueeze(0), _run_views(state), step)
            for (step, _, _), batch in batches.items():
                for chunk in _chunks(batch):
                    _update_flat_(rule, chunk, step)
        return loss

    def _flat_step_(self, index: int, rule: Rule, members: list, maximize: bool) -> bool:
        """``fused=True`` on the group's flat storage (`optarena.flat`): one compiled call for every
        parameter; False where the group cannot be flat this step (the per-tensor path runs)."""
        params, grads, states, steps = zip(*members)
        flat = self._flat.get(index)
        if flat is None or not flat.holds(params, states):
            if not flat_storage.eligible(params, grads, states):
                return False
            flat = self._flat[index] = flat_storage.FlatGroup(params, states)
        grad = flat.ready_grads(params)
        _flat_update_(rule, flat, grad.neg() if maximize else grad, steps[0])
        return True

    def _torch_step_(self, rule: Rule, group: dict, params: list[Tensor], grads: list[Tensor]) -> None:
        """The group through torch.optim's own kernels (`optarena.torch_kernels`): `params` with
        their gradients `grads`. In eager mode with real parameters the states are looked up with
        `map` (this Python runs for every parameter, every step, beside kernels of microseconds);
        dynamo traces the plain loop."""
        if torch.compiler.is_compiling() or any(map(torch.is_complex, params)):
            name = type(self).__name__
            reals = [_real(p, rule, name) if p.dtype.is_complex else p for p in params]
            grads = [torch.view_as_real(g) if g.dtype.is_complex else g for g in grads]
            states = [self.state[p] for p in params]  # a defaultdict: new ones are empty
        else:
            reals, states = params, list(map(self.state.__getitem__, params))
        if not all(states):
            for real, state in zip(reals, states):
                if not state:
                    state["step"] = 0
                    if self.rule_name not in torch_kernels.STATE_AT_FIRST_STEP:
                        state.update(_tensor_state(rule, real))
        if reals:
            torch_kernels.step_(self.rule_name, rule, group, reals, grads, states)

    # -- torch.optim state dicts --------------------------------------------------------------

    def load_state_dict(self, state_dict: dict) -> None:
        """Load a state_dict of this class, or of torch.optim's same optimizer (convention="pytorch":
        ``exp_avg`` / ``exp_avg_sq`` / ... renamed to this rule's names, torch's flags kept)."""
        if _is_torch_format(state_dict):
            state_dict = _from_torch(state_dict, self)
        super().load_state_dict(state_dict)
        self._flat.clear()  # new state tensors: the flat storage is made again from them at the next step

    def torch_state_dict(self) -> dict:
        """This optimizer's state in torch.optim's format, for ``torch.optim.<Same>.load_state_dict``
        (convention="pytorch" only)."""
        return _to_torch(self.state_dict(), self)

    def _apply_sparse(self, rule: Rule, param: Tensor, grad: Tensor, state: dict, step) -> None:
        """Apply the dense rule to the gathered rows present in a sparse gradient, then scatter back.

        Equal to the dense update because these rules leave rows with zero gradient unchanged.
        """
        name = type(self).__name__
        if not rule.supports_sparse:
            raise ValueError(f"{name} does not support sparse gradients; AdaGrad and FTRL do")
        if not rule.leaves_zero_rows():
            decay = {k: v for k, v in rule.hparams().items() if k in rule.sparse_blockers}
            raise ValueError(f"{name}: {decay} is not compatible with sparse gradients (it touches every row)")
        grad = grad.coalesce()
        if grad.sparse_dim() != 1:
            raise ValueError(f"{name}: sparse gradients must be sparse along dim 0 only (as nn.Embedding's are)")
        update_at_(rule, param, grad.values(), state, grad.indices()[0], 0, step)

    # -- evaluation point (Schedule-Free); a no-op for rules without one -------------------------

    @torch.no_grad()
    def eval(self) -> None:
        """Move the parameters to where the model should be evaluated (Schedule-Free's x)."""
        self._move(to_eval=True)

    @torch.no_grad()
    def train(self) -> None:
        """Move the parameters back to where gradients are taken (Schedule-Free's y)."""
        self._move(to_eval=False)

    def _move(self, to_eval: bool) -> None:
        if self._at_eval_point == to_eval:
            return
        for index, group in enumerate(self.param_groups):
            rule = self._plan(index, group).rule
            if not rule.has_eval_point:
                continue
            for param in group["params"]:
                state = self.state.get(param)
                if not state:
                    continue
                real = _real(param, rule, type(self).__name__)
                p, s = (real, state) if rule.elementwise else (real.unsqueeze(0), _run_views(state))
                (rule.to_eval_ if to_eval else rule.to_train_)(p, s)
        self._at_eval_point = to_eval


def _live(params: list[Tensor], compiling: bool) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters that have a gradient, and their gradients (`flat.all_grads` in eager mode;
    dynamo traces the plain comprehension)."""
    if not compiling:
        grads = flat_storage.all_grads(params)
        if grads is not None:
            return params, grads
    live = [param for param in params if param.grad is not None]
    return live, [param.grad for param in live]


def _real(param: Tensor, rule: Rule, name: str) -> Tensor:
    """A complex parameter as its real view (..., 2), as torch.optim treats it: the real and the
    imaginary part are two real parameters (so |g|^2 is never taken as g*g of a complex number).
    Rules that act on a parameter's matrix shape (Muon, SOAP, Adafactor) refuse complex ones."""
    if not torch.is_complex(param):
        return param
    if param.is_sparse or (param.grad is not None and param.grad.is_sparse):
        raise ValueError(f"{name}: complex sparse parameters are not supported")
    if not rule.elementwise:
        raise ValueError(f"{name} acts on the parameter's matrix shape and does not support complex parameters "
                         f"(got {param.dtype} of shape {tuple(param.shape)}); split it into real and imaginary parts")
    return torch.view_as_real(param)


_CAPTURABLE_DEVICES = ("cuda", "xpu", "hpu", "privateuseone", "xla")


def _check_capturable(params: list[Tensor], name: str) -> None:
    """capturable=True on a CPU parameter fails as in torch.optim (its steps must stay on the device)."""
    for param in params:
        if param.grad is not None and param.device.type not in _CAPTURABLE_DEVICES:
            raise AssertionError(f"{name}: if capturable=True, params and state_steps must be on supported devices: "
                                 f"{list(_CAPTURABLE_DEVICES)} (got {param.device}); use capturable=False on CPU")


# Small tensors go through the rule together, in chunks of about this many elements: a chunk's
# temporaries stay in cache (larger tensors, one at a time, are memory-bound and gain nothing).
_BATCH_ELEMENTS = 1 << 15


def _chunks(batch: list) -> Iterable[list]:
    chunk, size = [], 0
    for member in batch:
        chunk.append(member)
        size += member[0].numel()
        if size >= _BATCH_ELEMENTS:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _batchable(rule: Rule, group: dict) -> bool:
    """Whether the group's small parameters go through the rule together (``foreach`` / ``fused``
    not False): elementwise rules with one value per hyperparameter."""
    if group.get("foreach") is False and not group.get("fused"):
        return False
    return rule.elementwise and not any(isinstance(v, Tensor) for v in rule.hparams().values())


def _update_flat_(rule: Rule, chunk: list, step: int) -> None:
    """One call of an elementwise rule for the chunk's parameters (same step, dtype and device),
    concatenated into one flat tensor with their gradients and states, then copied back: each
    operation of the formula runs once instead of once per parameter, element by element the same
    kernels, so the same numbers (checked bitwise in tests/test_optim.py)."""
    # Nothing to gain for one tensor or a stateless rule (plain SGD: one operation, fewer than the copies).
    flat = _flatten(chunk) if len(chunk) > 1 and any(k != "step" for k in chunk[0][2]) else None
    if flat is None:
        for p, g, s in chunk:
            rule.update_(p, g, s, step)
        return
    rule.update_(*flat, step)
    _copy_back(chunk, flat)


def _flatten(chunk: list) -> tuple[Tensor, Tensor, dict[str, Tensor]] | None:
    """The chunk's (param, grad, state) concatenated into flat tensors; None where a state is not
    one value per coordinate of its parameter's dtype (NAdam's mu_product), which cannot be."""
    params, grads, states = zip(*chunk)
    keys = [k for k, v in states[0].items() if k != "step" and isinstance(v, Tensor)]
    if any(states[0][k].shape != params[0].shape for k in keys):
        return None
    flatten = torch._C._nn.flatten_dense_tensors
    flat_param, flat_grad = flatten(params), flatten(grads)
    flat_state = {k: flatten([s[k] for s in states]) for k in keys}
    if any(v.shape != flat_param.shape or v.dtype != flat_param.dtype for v in (flat_grad, *flat_state.values())):
        return None
    return flat_param, flat_grad, flat_state


def _copy_back(chunk: list, flat: tuple[Tensor, Tensor, dict[str, Tensor]]) -> None:
    params, _, states = zip(*chunk)
    flat_param, _, flat_state = flat
    unflatten = torch._C._nn.unflatten_dense_tensors
    torch._foreach_copy_(list(params), unflatten(flat_param, params))
    for k, v in flat_state.items():
        targets = [s[k] for s in states]
        torch._foreach_copy_(targets, unflatten(v, targets))


def _flat_update_(rule: Rule, flat: flat_storage.FlatGroup, grad: Tensor, step: int) -> None:
    """A flat group's update (`optarena.flat`): the rule over its flat buffers in one compiled call,
    or eagerly, one pass per operation, where the group is smaller than `fused.MIN_COMPILED_VALUES`
    (a compiled call's fixed cost exceeds the update there; the eager rule over the flat buffers is
    bitwise the default per-tensor path)."""
    if flat.param.numel() < compiled.MIN_COMPILED_VALUES:
        rule.update_(flat.param, grad, flat.kernel_state(), step)
    else:
        compiled.update_(rule, [flat.param], [grad], [flat.kernel_state()], step, chunk=1)
    flat.sync_scalars()


def _fused_update_(rule: Rule, members: list) -> None:
    """``fused=True``: every dense parameter of a group through the compiled kernel
    (`optarena.fused`), small ones concatenated first; a parameter that is not contiguous (its
    flat view would be a copy) goes through the eager rule."""
    by_step: dict[tuple, list] = {}
    for p, grad, state, step in members:
        by_step.setdefault((step, p.dtype, p.device), []).append((p, grad, state))
    for (step, _, _), batch in by_step.items():
        items, flattened = [], []
        small = [m for m in batch if m[0].numel() < _BATCH_ELEMENTS]
        rest = [m for m in batch if m[0].numel() >= _BATCH_ELEMENTS]
        for chunk in _chunks(small):
            flat = _flatten(chunk) if len(chunk) > 1 else None
            if flat is None:
                rest.extend(chunk)
            else:
                items.append(flat)
                flattened.append((chunk, flat))
        for p, g, s in rest:
            if not (p.is_contiguous() and g.is_contiguous()):
                rule.update_(p, g, s, step)
                continue
            state = {k: v.view(-1) if v.shape == p.shape else v for k, v in s.items() if isinstance(v, Tensor)}
            items.append((p.view(-1), g.view(-1), state))
        if items:  # one tensor alone: the one-tensor kernel (the flat groups'), not one padded to 8
            compiled.update_(rule, *map(list, zip(*items)), step, chunk=1 if len(items) == 1 else compiled.CHUNK)
        for chunk, flat in flattened:
            _copy_back(chunk, flat)


# Our state names -> torch.optim's, for the optimizers torch.optim has (convention="pytorch").
TORCH_STATE_NAMES = torch_kernels.STATE_NAMES
TORCH_CLASS_NAMES = torch_kernels.CLASS_NAMES


def _is_torch_format(state_dict: dict) -> bool:
    """A state_dict saved by torch.optim: its groups carry no ``convention`` (ours always do)."""
    groups = state_dict.get("param_groups", [])
    return bool(groups) and all("convention" not in g for g in groups)


def _torch_names(opt: RuleOptimizer, direction: str) -> dict[str, str]:
    name = opt.rule_name
    conventions = {g.get("convention", "article") for g in opt.param_groups}
    if name not in TORCH_STATE_NAMES or conventions != {"pytorch"}:
        raise ValueError(f"{type(opt).__name__}: a torch.optim state_dict maps {direction} only convention='pytorch' "
                         f"optimizers that torch.optim has ({', '.join(TORCH_CLASS_NAMES.values())}); this one is "
                         f"{name!r} with convention(s) {sorted(conventions)}")
    return TORCH_STATE_NAMES[name]


def _from_torch(state_dict: dict, opt: RuleOptimizer) -> dict:
    """torch.optim's state_dict with this rule's state names, step counts and group keys."""
    cls_name = type(opt).__name__
    names = {theirs: ours for ours, theirs in _torch_names(opt, "from").items()}
    state = {}
    for index, saved in state_dict["state"].items():
        unknown = sorted(set(saved) - set(names) - {"step"})
        if unknown:
            raise ValueError(f"{cls_name}: cannot load torch.optim state keys {unknown} for parameter {index} "
                             f"(known: {sorted(names)} and 'step'); was it saved by torch.optim."
                             f"{TORCH_CLASS_NAMES[opt.rule_name]} with the same options?")
        converted = {names[k]: v for k, v in saved.items() if k != "step"}
        # torch.optim.SGD keeps no step: a saved momentum buffer means past the first step
        # (an int, as our eager steps keep it; step() makes it a tensor again when compiled or capturable)
        converted["step"] = int(saved.get("step", 1 if converted else 0))
        state[index] = converted
    groups = []
    for mine, saved in zip(opt.param_groups, state_dict["param_groups"]):
        group = dict(saved)
        group["convention"] = mine["convention"]
        decoupled = group.get(rules.registry.DECOUPLED, False)
        if isinstance(decoupled, bool):  # torch's Adam(decoupled_weight_decay=True) is AdamW
            if decoupled and opt.rule_name != "adamw":
                raise ValueError(f"{cls_name}: the torch.optim state_dict has decoupled_weight_decay=True "
                                 "(torch's AdamW form); load it into optarena.optim.AdamW(convention='pytorch')")
            group[rules.registry.DECOUPLED] = 0.0  # AdamW's decoupling is its own rule's, not an extra decay
        missing = sorted(set(mine) - set(group) - {"params"})
        for key in missing:
            group[key] = mine[key]
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _to_torch(state_dict: dict, opt: RuleOptimizer) -> dict:
    """This optimizer's state_dict in torch.optim's names (the reverse of `_from_torch`)."""
    cls_name = type(opt).__name__
    names = _torch_names(opt, "to")
    state = {}
    for index, saved in state_dict["state"].items():
        converted = {names[k]: v for k, v in saved.items() if k in names}
        if opt.rule_name not in ("sgd", "momentum"):  # torch.optim.SGD keeps no step
            converted["step"] = torch.as_tensor(saved["step"], dtype=torch_kernels.step_dtype(fused=False)).clone()
        state[index] = converted
    groups = []
    for saved in state_dict["param_groups"]:
        group = {k: v for k, v in saved.items() if k != "convention"}
        extra = group.pop(rules.registry.DECOUPLED, 0.0)
        if any_nonzero(extra):
            raise ValueError(f"{cls_name}: {rules.registry.DECOUPLED}={extra} has no torch.optim."
                             f"{TORCH_CLASS_NAMES[opt.rule_name]} equivalent; set it to 0")
        if opt.rule_name in ("adam", "adamw"):
            group[rules.registry.DECOUPLED] = opt.rule_name == "adamw"
        groups.append(group)
    return {"state": state, "param_groups": groups}


def _tensor_state(rule: Rule, param: Tensor) -> dict[str, Tensor]:
    """A rule's initial state for one parameter, stored without the run dimension of rules that
    are not elementwise (so state_dict() shapes are the parameter's own)."""
    if rule.elementwise:
        return rule.init_state(param)
    return {k: v.squeeze(0) if isinstance(v, Tensor) and v.ndim > 0 else v
            for k, v in rule.init_state(param.unsqueeze(0)).items()}


def _run_views(state: dict) -> dict:
    """The state with a leading run dimension of 1 on every tensor (views: updates reach the state)."""
    return {k: v.unsqueeze(0) if isinstance(v, Tensor) else v for k, v in state.items()}


def _signature_names(entry: rules.Optimizer) -> list[str]:
    """The drop-in's keyword names: the entry's `signature`, else every convention's defaults in
    order of first appearance (pytorch first, as torch.optim orders them), beta1/beta2 as betas."""
    order = list(entry.signature)
    conventions = sorted(entry.conventions, key=lambda c: (c != "pytorch", c != "article"))
    for c in conventions:
        for key in rules.defaults(entry.name, c):
            key = "betas" if key in ("beta1", "beta2") else key
            if key not in order and key != rules.registry.DECOUPLED:
                order.append(key)
    return order + [rules.registry.DECOUPLED]


def _docstring(entry: rules.Optimizer) -> str:
    lines = [f"{entry.class_name}: {entry.summary}.", "", "Conventions (``convention=``):"]
    for c, conv in entry.conventions.items():
        source = f"  [{conv.source}]" if conv.source else ""
        lines.append(f"    {c:8s} {conv.formula}{source}")
        lines.append(f"             defaults: {', '.join(f'{k}={v!r}' for k, v in conv.defaults.items())}")
    for c, why in entry.absent.items():
        lines.append(f"    {c:8s} none: {why}")
    if entry.reference:
        lines += ["", entry.reference]
    return "\n".join(lines)


# torch.optim's execution keywords and their defaults (what each does: the module docstring).
TORCH_FLAGS = {"foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None}


def _make_class(entry: rules.Optimizer) -> type[RuleOptimizer]:
    names = _signature_names(entry)
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
         inspect.Parameter("params", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for n in names[:-1]]
        + [inspect.Parameter(names[-1], inspect.Parameter.KEYWORD_ONLY, default=None),
           inspect.Parameter("convention", inspect.Parameter.KEYWORD_ONLY, default="article")]
        + [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in TORCH_FLAGS.items()]
    )

    def __init__(self, params, *args, **kwargs):
        try:
            bound = signature.bind(self, params, *args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{entry.class_name}(): {e}") from None
        given = {k: v for k, v in bound.arguments.items() if k not in ("self", "params", "convention", *TORCH_FLAGS)}
        flags = {k: bound.arguments[k] for k in TORCH_FLAGS if k in bound.arguments}
        RuleOptimizer.__init__(self, params, convention=bound.arguments.get("convention", "article"), **flags, **given)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    return type(entry.class_name, (RuleOptimizer,), {
        "rule_name": entry.name, "__init__": __init__, "__doc__": _docstring(entry), "__module__": __name__,
        "__qualname__": entry.class_name,
    })


OPTIMIZERS: dict[str, type[RuleOptimizer]] = {name: _make_class(e) for name, e in rules.entries().items()}
globals().update({cls.__name__: cls for cls in OPTIMIZERS.values()})

__all__ = ["RuleOptimizer", "OPTIMIZERS", "create", *(cls.__name__ for cls in OPTIMIZERS.values())]


def create(name: str, params: Iterable, convention: str = "article", **hparams: Any) -> RuleOptimizer:
    """The optimizer called `name` (see ``optarena.rules.names()``), hyperparameters given flat
    (``beta1``/``beta2`` accepted), as trials store them."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}")
    flat = dict(hparams)
    if "beta1" in flat or "beta2" in flat:
        d = rules.defaults(name, convention)
        flat["betas"] = (flat.pop("beta1", d.get("beta1")), flat.pop("beta2", d.get("beta2")))
    return OPTIMIZERS[name](params, convention=convention, **flat)


def __getattr__(name: str):  # a clear message for a name that is not an optimizer here
    raise AttributeError(f"module 'optarena.optim' has no attribute {name!r}; optimizers: "
                         f"{', '.join(cls.__name__ for cls in OPTIMIZERS.values())}")
