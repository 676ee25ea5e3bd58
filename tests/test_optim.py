"""optarena.optim classes behave as torch.optim drop-ins: param groups, state_dict round trips,
LR schedulers, zero_grad, closures, parameters without gradients, and convention defaults (checked
against torch.optim's and Keras's own signatures)."""

from __future__ import annotations

import copy
import inspect
import io
import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any keras import

import pytest
import torch

from optarena import fused, optim, torch_kernels
from optarena import rules as conventions

CLASS_NAMES = {name: cls.__name__ for name, cls in optim.OPTIMIZERS.items()}
CASES = [(name, conv) for name in CLASS_NAMES for conv in conventions.entry(name).conventions]
IDS = [f"{n}-{c}" for n, c in CASES]
TORCH_CLASS = {  # the torch.optim original of each pytorch convention
    "sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
    "adamw": "AdamW", "adadelta": "Adadelta", "nadam": "NAdam",
}


def cls(name):
    return getattr(optim, CLASS_NAMES[name])


def make_params(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randn(4, 3, generator=g, dtype=torch.float64).requires_grad_(),
        torch.randn(3, generator=g, dtype=torch.float64).requires_grad_(),
    ]


def clone(params):
    return [p.detach().clone().requires_grad_() for p in params]


def loss(params, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64)
    y = torch.randn(6, 3, generator=g, dtype=torch.float64)
    w, b = params
    return ((torch.tanh(x @ w + b) - y) ** 2).mean()


def train(opt, params, steps: int, start: int = 0, scheduler=None) -> None:
    for step in range(start, start + steps):
        opt.zero_grad()
        loss(params, step).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


def assert_bitwise(a, b):
    for x, y in zip(a, b):
        assert torch.equal(x.detach(), y.detach()), f"max |diff| = {(x - y).abs().max().item():.3g}"


# ---- the class hierarchy and the default convention ---------------------------------------------


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_every_class_is_a_torch_optimizer(name, convention):
    assert issubclass(cls(name), torch.optim.Optimizer)
    assert isinstance(cls(name)(make_params(), convention=convention), torch.optim.Optimizer)


@pytest.mark.parametrize("name", list(CLASS_NAMES))
def test_the_default_convention_is_the_article(name):
    a, b = make_params(), make_params()
    train(cls(name)(a), a, 5)
    train(cls(name)(b, convention="article"), b, 5)
    assert_bitwise(a, b)


# ---- param groups ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_each_param_group_uses_its_own_lr(name, convention):
    w, b = make_params()
    opt = cls(name)([{"params": [w], "lr": 0.1}, {"params": [b]}], lr=0.01, convention=convention)
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.01]
    train(opt, [w, b], 5)
    # the same as two optimizers, one per group
    w2, b2 = make_params()
    opt_w = cls(name)([w2], lr=0.1, convention=convention)
    opt_b = cls(name)([b2], lr=0.01, convention=convention)
    for step in range(5):
        opt_w.zero_grad()
        opt_b.zero_grad()
        loss([w2, b2], step).backward()
        opt_w.step()
        opt_b.step()
    assert_bitwise([w, b], [w2, b2])


def test_param_group_lr_in_closed_form():
    w, b = make_params()
    w0, b0 = w.detach().clone(), b.detach().clone()
    opt = optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.02}], convention="article")
    loss([w, b], 0).backward()
    gw, gb = w.grad.clone(), b.grad.clone()
    opt.step()
    torch.testing.assert_close(w.detach(), w0 - 0.1 * gw, rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(b.detach(), b0 - 0.02 * gb, rtol=1e-15, atol=1e-15)


# ---- state_dict -----------------------------------------------------------------------------


def _round_trip(make, a, steps_before=5, steps_after=5):
    """Train `steps_before`, checkpoint through torch.save/torch.load into a fresh optimizer on a
    copy of the parameters, then train both `steps_after` more; returns (continued, resumed)."""
    opt_a = make(a)
    train(opt_a, a, steps_before)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)  # as users checkpoint it
    buf.seek(0)
    b = clone(a)
    opt_b = make(b)
    opt_b.param_groups[0]["lr"] = 0.5  # the saved lr must win
    opt_b.load_state_dict(torch.load(buf))
    assert opt_b.param_groups[0]["lr"] == opt_a.param_groups[0]["lr"]
    train(opt_a, a, steps_after, start=steps_before)
    train(opt_b, b, steps_after, start=steps_before)
    return a, b


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_state_dict_round_trip_continues_bitwise(name, convention):
    if (name, convention) == ("nadam", "pytorch"):
        pytest.skip("torch.optim.NAdam itself is not bitwise across a round trip; tested below")
    a, b = _round_trip(lambda ps: cls(name)(ps, convention=convention), make_params())
    assert_bitwise(a, b)


def test_pytorch_nadam_round_trip_matches_torch_nadam_round_trip():
    # torch keeps NAdam's mu_product as a float32 scalar and load_state_dict casts it to the
    # param dtype, so the resumed run drifts ~1e-12 from the continued one -- in torch as well.
    # The pytorch convention must reproduce torch, round trip included.
    _, ours = _round_trip(lambda ps: optim.Nadam(ps, convention="pytorch"), make_params())
    _, ref = _round_trip(lambda ps: torch.optim.NAdam(ps), make_params())
    for x, y in zip(ours, ref):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


# ---- learning-rate schedulers ---------------------------------------------------------------


def test_step_lr_drives_sgd_in_closed_form():
    p = make_params()
    opt = optim.SGD(p, lr=0.1, convention="article")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    ref = [x.detach().clone() for x in make_params()]
    for step in range(6):
        opt.zero_grad()
        loss(p, step).backward()
        grads = [x.grad.clone() for x in p]
        opt.step()
        sched.step()
        lr_t = 0.1 * 0.5 ** (step // 2)
        ref = [r - lr_t * g for r, g in zip(ref, grads)]
        for x, r in zip(p, ref):
            torch.testing.assert_close(x.detach(), r, rtol=1e-14, atol=1e-15)


def _lambda(epoch: int) -> float:
    return 1.0 / (1.0 + epoch)


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
@pytest.mark.parametrize("kind", ["step", "lambda"])
def test_schedulers_change_the_lr_actually_used(name, convention, kind):
    base = 0.05
    p = make_params()
    opt = cls(name)(p, lr=base, convention=convention)
    if kind == "step":
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
        lr_at = lambda t: base * 0.5 ** (t // 2)  # noqa: E731
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, _lambda)
        lr_at = lambda t: base * _lambda(t)  # noqa: E731
    train(opt, p, 6, scheduler=sched)

    by_hand = make_params()
    opt_h = cls(name)(by_hand, lr=base, convention=convention)
    for step in range(6):
        for group in opt_h.param_groups:
            group["lr"] = lr_at(step)
        train(opt_h, by_hand, 1, start=step)
    assert_bitwise(p, by_hand)

    constant = make_params()
    train(cls(name)(constant, lr=base, convention=convention), constant, 6)
    assert any(not torch.equal(x, y) for x, y in zip(p, constant)), "the schedule had no effect"


def test_lambda_lr_on_pytorch_adam_equals_torch_adam():
    p, q = make_params(), make_params()
    ours = optim.Adam(p, lr=0.05, convention="pytorch")
    ref = torch.optim.Adam(q, lr=0.05)
    train(ours, p, 8, scheduler=torch.optim.lr_scheduler.LambdaLR(ours, _lambda))
    train(ref, q, 8, scheduler=torch.optim.lr_scheduler.LambdaLR(ref, _lambda))
    for x, y in zip(p, q):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


# ---- zero_grad, closure, parameters without gradients -------------------------------------------


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_zero_grad_sets_grads_to_none(name, convention):
    p = make_params()
    opt = cls(name)(p, convention=convention)
    train(opt, p, 1)
    assert all(x.grad is not None for x in p)
    opt.zero_grad()
    assert all(x.grad is None for x in p)


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_step_with_closure_returns_its_loss(name, convention):
    p = make_params()
    before = [x.detach().clone() for x in p]
    opt = cls(name)(p, lr=0.05, convention=convention)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        value = loss(p, 0)
        value.backward()  # fails if step() calls the closure with gradients disabled
        return value

    out = opt.step(closure)
    assert len(calls) == 1
    assert out is not None and float(out) == float(loss(before, 0))
    if name == "soap":  # SOAP's first step only sets up its preconditioner (as pytorch-optimizer's)
        opt.step(closure)
    assert any(not torch.equal(x.detach(), y) for x, y in zip(p, before))


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_parameters_without_grad_are_skipped(name, convention):
    w, b = make_params()
    b0 = b.detach().clone()
    opt = cls(name)([w, b], convention=convention)
    for step in range(3):
        opt.zero_grad()
        loss([w, b0], step).backward()  # b gets no gradient
        opt.step()
    assert b.grad is None
    assert torch.equal(b.detach(), b0)


@pytest.mark.parametrize("name", list(TORCH_CLASS))
def test_pytorch_convention_keeps_a_step_count_per_parameter(name):
    """A parameter that first gets a gradient late starts its own count (torch's per-parameter
    `step`), as torch.optim does."""
    kwargs = {"momentum": 0.9} if name in ("sgd", "momentum") else {}
    runs = []
    for make in (lambda ps: cls(name)(ps, convention="pytorch", **kwargs),
                 lambda ps: getattr(torch.optim, TORCH_CLASS[name])(ps, **kwargs)):
        w, b = make_params()
        opt = make([w, b])
        for step in range(6):
            opt.zero_grad()
            loss([w, b if step >= 3 else b.detach()], step).backward()
            opt.step()
        runs.append((w, b))
    for x, y in zip(*runs):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


# ---- defaults -------------------------------------------------------------------------------


def _signature_defaults(klass) -> dict:
    return {
        k: v.default
        for k, v in inspect.signature(klass.__init__).parameters.items()
        if v.default is not inspect.Parameter.empty
    }


TORCH_KEYS = {
    "sgd": ["lr", "momentum", "dampening", "weight_decay", "nesterov"],
    "momentum": ["lr", "dampening", "weight_decay", "nesterov"],
    "adagrad": ["lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"],
    "rmsprop": ["lr", "alpha", "eps", "weight_decay", "momentum", "centered"],
    "adam": ["lr", "betas", "eps", "weight_decay", "amsgrad"],
    "adamw": ["lr", "betas", "eps", "weight_decay", "amsgrad"],
    "adadelta": ["lr", "rho", "eps", "weight_decay"],
    "nadam": ["lr", "betas", "eps", "weight_decay", "momentum_decay"],
}
KERAS_CLASS = {
    "sgd": "SGD", "momentum": "SGD", "adagrad": "Adagrad", "rmsprop": "RMSprop", "adam": "Adam",
    "adamw": "AdamW", "adadelta": "Adadelta", "nadam": "Nadam", "ftrl": "Ftrl",
}
KERAS_KEYS = {  # ours -> keras
    "lr": "learning_rate", "eps": "epsilon", "momentum": "momentum", "nesterov": "nesterov",
    "initial_accumulator_value": "initial_accumulator_value", "centered": "centered",
    "amsgrad": "amsgrad", "rho": "rho", "lr_power": "learning_rate_power",
    "l1": "l1_regularization_strength", "l2": "l2_regularization_strength",
    "l2_shrinkage": "l2_shrinkage_regularization_strength", "beta": "beta",
}


def _expected_defaults(name: str, convention: str) -> dict:
    if convention == "pytorch":
        sig = _signature_defaults(getattr(torch.optim, TORCH_CLASS[name]))
        out = {k: sig[k] for k in TORCH_KEYS[name]}
        if name == "momentum":
            out["momentum"] = 0.9
        return out
    import keras

    sig = _signature_defaults(getattr(keras.optimizers, KERAS_CLASS[name]))
    out = {ours: sig[theirs] for ours, theirs in KERAS_KEYS.items() if theirs in sig}
    if name == "rmsprop":
        out["alpha"] = out.pop("rho")
    if name in ("adam", "adamw", "nadam"):
        out["betas"] = (sig["beta_1"], sig["beta_2"])
    if name == "adamw":
        out["weight_decay"] = sig["weight_decay"]
    if name == "momentum":
        out["momentum"] = 0.9
    return out


def _same(a, b) -> bool:
    if isinstance(a, (tuple, list)) or isinstance(b, (tuple, list)):
        return tuple(a) == tuple(b)
    return a == b


# The contenders' reference defaults are checked against their references in tests/rules/test_contenders.py.
LIBRARY_CASES = [(n, c) for n, c in CASES if c != "article" and (n in TORCH_CLASS or c == "keras") and n in KERAS_CLASS]


@pytest.mark.parametrize("name,convention", LIBRARY_CASES, ids=[f"{n}-{c}" for n, c in LIBRARY_CASES])
def test_left_out_hyperparameters_take_the_original_library_defaults(name, convention):
    opt = cls(name)(make_params(), convention=convention)
    for key, value in _expected_defaults(name, convention).items():
        assert key in opt.defaults, f"{key} missing from defaults {opt.defaults}"
        assert _same(opt.defaults[key], value), f"{key}: {opt.defaults[key]!r} != {value!r}"
        assert _same(opt.param_groups[0][key], value)


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_defaults_come_from_the_conventions_module(name, convention):
    opt = cls(name)(make_params(), convention=convention)
    expected = dict(conventions.defaults(name, convention))
    if "beta1" in expected:  # the conventions module stores them flat; optimizers as torch's pair
        expected["betas"] = (expected.pop("beta1"), expected.pop("beta2"))
    for key, value in expected.items():
        assert _same(opt.defaults[key], value), f"{key}: {opt.defaults[key]!r} != {value!r}"


def test_adam_eps_defaults_by_convention():
    assert optim.Adam(make_params(), convention="keras").defaults["eps"] == 1e-7
    assert optim.Adam(make_params(), convention="pytorch").defaults["eps"] == 1e-8


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_given_hyperparameters_override_defaults(name, convention):
    opt = cls(name)(make_params(), lr=0.0123, convention=convention)
    assert opt.defaults["lr"] == 0.0123 and opt.param_groups[0]["lr"] == 0.0123


# ---- complex parameters -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sgd", "momentum", "adagrad", "rmsprop", "adam", "adamw", "adadelta", "nadam"])
def test_complex_parameters_match_torch(name):
    """A complex parameter is two real ones (torch.optim's view_as_real), never g*g of a complex g."""
    target = torch.randn(5, 3, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    kwargs = {"momentum": 0.9} if name in ("sgd", "momentum") else {}
    out = []
    for make in (lambda ps: cls(name)(ps, lr=0.05, convention="pytorch", **kwargs),
                 lambda ps: getattr(torch.optim, TORCH_CLASS[name])(ps, lr=0.05, **kwargs)):
        w = torch.zeros(5, 3, dtype=torch.complex128, requires_grad=True)
        opt = make([w])
        for _ in range(200):
            opt.zero_grad()
            ((w - target).abs() ** 2).sum().backward()
            opt.step()
        out.append(w.detach())
    torch.testing.assert_close(out[0], out[1], rtol=1e-7, atol=1e-8)
    assert (out[0] - target).abs().mean() < target.abs().mean()  # it moved towards the target


def test_complex_parameters_are_refused_by_matrix_rules():
    w = torch.zeros(4, 3, dtype=torch.complex64, requires_grad=True)
    opt = optim.create("muon", [w], "pytorch")
    (w.abs() ** 2).sum().backward()
    with pytest.raises(ValueError, match="does not support complex parameters"):
        opt.step()


# ---- torch.optim's execution keywords -----------------------------------------------------------


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_one_call_over_the_group_equals_one_parameter_at_a_time_bitwise(name, convention):
    a, b = make_params(), make_params()
    train(cls(name)(a, convention=convention), a, 5)
    train(cls(name)(b, convention=convention, foreach=False), b, 5)
    assert_bitwise(a, b)


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_maximize_ascends_the_negated_loss_bitwise(name, convention):
    a, b = make_params(), make_params()
    opt_a, opt_b = cls(name)(a, convention=convention, maximize=True), cls(name)(b, convention=convention)
    for step in range(5):
        opt_a.zero_grad()
        opt_b.zero_grad()
        (-loss(a, step)).backward()
        loss(b, step).backward()
        opt_a.step()
        opt_b.step()
    assert_bitwise(a, b)


@pytest.mark.parametrize("name", list(TORCH_CLASS))
@pytest.mark.parametrize("flag", ["maximize", "foreach", "fused"])
def test_torch_keywords_match_torch(name, flag):
    kwargs = {"momentum": 0.9} if name in ("sgd", "momentum") else {}
    if flag == "fused" and TORCH_CLASS[name] not in ("SGD", "Adam", "AdamW", "Adagrad"):
        with pytest.raises(TypeError):  # torch has no fused kernel for these; we accept it as a path choice
            getattr(torch.optim, TORCH_CLASS[name])(make_params(), fused=True)
        ref_kwargs = {}
    else:
        ref_kwargs = {flag: True}
    p, q = make_params(), make_params()
    train(cls(name)(p, convention="pytorch", **{flag: True}, **kwargs), p, 6)
    train(getattr(torch.optim, TORCH_CLASS[name])(q, **ref_kwargs, **kwargs), q, 6)
    for x, y in zip(p, q):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def _execution_choices(name):
    """(our flags, torch.optim's flags giving the same bits (None: our default path's), values below
    which fused=True takes the flat eager rule): foreach=True; fused=True on a group at
    `fused.MIN_COMPILED_VALUES` values or more (here: any group); fused=True on a smaller group, the
    eager rule over flat storage, which is the default path (the rule) bit for bit."""
    choices = [({"foreach": True}, {"foreach": True}, None)]
    if name in torch_kernels.FUSED:
        choices += [({"fused": True}, {"fused": True}, 0), ({"fused": True}, None, None)]
    return choices


@pytest.mark.parametrize("name", list(TORCH_CLASS))
def test_pytorch_convention_runs_torch_kernels_bitwise(name, monkeypatch):
    """convention="pytorch" with foreach=True / fused=True hands the group to torch.optim's own
    kernels (optarena.torch_kernels): the same bits as torch.optim with that choice, float32, many
    shapes, weight decay on, maximize on, an LR scheduler; a fused=True group too small for a fused
    kernel to pay gets the rule's bits (the default path's: torch.optim's for-loop to rounding)."""
    options = {"sgd": {"momentum": 0.9, "dampening": 0.1, "nesterov": False}, "momentum": {"momentum": 0.9, "nesterov": True},
               "adam": {"amsgrad": True}, "rmsprop": {"momentum": 0.5, "centered": True}}.get(name, {})
    options = {**options, "weight_decay": 0.01, "maximize": True}
    g = torch.Generator().manual_seed(3)
    shapes = [(50, 40), (7,), (3, 1, 2), (1000,)]
    start = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(5)]
    for ours, theirs, threshold in _execution_choices(name):
        if threshold is not None:
            monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", threshold)
        results = []
        for make in (lambda ps: cls(name)(ps, lr=0.01, convention="pytorch", **options, **ours),
                     lambda ps: (cls(name)(ps, lr=0.01, convention="pytorch", **options) if theirs is None else
                                 getattr(torch.optim, TORCH_CLASS[name])(ps, lr=0.01, **options, **theirs))):
            ps = [x.clone().requires_grad_() for x in start]
            opt = make(ps)
            scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
            for gs in grads:
                for x, grad in zip(ps, gs):
                    x.grad = grad.clone()
                opt.step()
                scheduler.step()
            results.append(ps)
        assert_bitwise(*results)
        monkeypatch.undo()


def test_torch_keywords_refused_as_torch_refuses_them_on_cpu():
    with pytest.raises(RuntimeError, match="cannot be `True` together"):
        optim.Adam(make_params(), foreach=True, fused=True)
    with pytest.raises(ValueError, match="differentiable=True is not supported"):
        optim.Adam(make_params(), differentiable=True)
    p = make_params()
    opt = optim.Adam(p, convention="pytorch", capturable=True)
    loss(p, 0).backward()
    with pytest.raises(AssertionError, match="capturable=True"):  # torch.optim.Adam fails the same on CPU
        opt.step()
    assert "maximize" in inspect.signature(optim.Adam).parameters


# ---- torch.optim state dicts --------------------------------------------------------------------


def _torch_kwargs(name):
    return {"momentum": 0.9} if name in ("sgd", "momentum") else {"amsgrad": True} if name == "adam" else {}


@pytest.mark.parametrize("name", list(TORCH_CLASS))
def test_a_torch_state_dict_loads_and_training_continues_as_torch(name):
    kwargs = _torch_kwargs(name)
    q = make_params()
    ref = getattr(torch.optim, TORCH_CLASS[name])(q, **kwargs)
    train(ref, q, 5)
    p = clone(q)
    ours = cls(name)(p, convention="pytorch", **kwargs)
    ours.load_state_dict(copy.deepcopy(ref.state_dict()))  # a checkpoint: torch's state tensors are not shared
    assert ours.param_groups[0]["convention"] == "pytorch"
    train(ref, q, 5, start=5)
    train(ours, p, 5, start=5)
    for x, y in zip(p, q):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(TORCH_CLASS))
def test_our_state_loads_into_torch_and_training_continues_as_ours(name):
    kwargs = _torch_kwargs(name)
    p = make_params()
    ours = cls(name)(p, convention="pytorch", **kwargs)
    train(ours, p, 5)
    q = clone(p)
    ref = getattr(torch.optim, TORCH_CLASS[name])(q, **kwargs)
    ref.load_state_dict(copy.deepcopy(ours.torch_state_dict()))
    train(ref, q, 5, start=5)
    train(ours, p, 5, start=5)
    for x, y in zip(p, q):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_a_torch_state_dict_that_does_not_map_names_its_keys():
    q = make_params()
    ref = torch.optim.Adagrad(q)
    train(ref, q, 2)
    with pytest.raises(ValueError, match=r"\['sum'\]"):
        optim.Adam(clone(q), convention="pytorch").load_state_dict(ref.state_dict())
    with pytest.raises(ValueError, match="convention='pytorch'"):
        optim.AdaGrad(clone(q), convention="article").load_state_dict(ref.state_dict())
    adamw_form = torch.optim.Adam(q, decoupled_weight_decay=True)
    with pytest.raises(ValueError, match="AdamW"):
        optim.Adam(clone(q), convention="pytorch").load_state_dict(adamw_form.state_dict())


# ---- torch.compile ------------------------------------------------------------------------------


def compiled_steps(opt, params, reference=None, steps: int = 5) -> int:
    """Run `steps` steps of ``torch.compile(opt.step)`` (gradients 0.1 (t + 1)), and of
    `reference` on the same gradients if given; return the number of graphs dynamo built."""
    import torch._dynamo

    torch._dynamo.reset()
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    @torch.compile(backend=counting_backend)
    def step():
        opt.step()

    ref_params = [] if reference is None else [p for g in reference.param_groups for p in g["params"]]
    for t in range(steps):
        for x in params:
            x.grad = torch.full_like(x, 0.1 * (t + 1))
        for x, y in zip(params, ref_params):
            y.grad = x.grad.clone()
        step()
        if reference is not None:
            reference.step()
    torch._dynamo.reset()
    return len(graphs)


@pytest.mark.parametrize("name,convention", [("adam", "pytorch"), ("adam", "article"), ("adam", "keras"),
                                             ("momentum", "pytorch")])
def test_compiled_step_compiles_once_not_once_per_step(name, convention):
    """The step count is a tensor, so dynamo does not specialise on it: one graph for the first
    step (which creates the state), one for every step after."""
    p = [x.detach().float().requires_grad_() for x in make_params()]
    opt = cls(name)(p, lr=0.01, convention=convention)
    graphs = compiled_steps(opt, p)
    assert graphs <= 2, f"{graphs} graphs for 5 steps"
    assert float(opt.state[p[0]]["step"]) == 5.0


@pytest.mark.parametrize("choice", [{"foreach": True}, {"fused": True}])
def test_compiled_step_on_torch_kernels_compiles_once(choice):
    """convention="pytorch" with foreach/fused under torch.compile: no graph per step (as many graphs
    for ten steps as for five; at most two with foreach, torch.optim's kernels traced; torch's fused
    kernel is not traced by dynamo, and this small group takes the eager rule over its flat
    storage), the numbers torch.optim's own compiled step gives."""
    counts = []
    for steps in (5, 10):
        p = [x.detach().float().requires_grad_() for x in make_params()]
        q = [x.detach().clone().requires_grad_() for x in p]
        opt, ref = optim.Adam(p, lr=0.01, convention="pytorch", **choice), torch.optim.Adam(q, lr=0.01, **choice)
        counts.append(compiled_steps(opt, p, reference=ref, steps=steps))
        for x, y in zip(p, q):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
    assert counts[0] == counts[1], f"{counts[0]} graphs for 5 steps, {counts[1]} for 10"
    if choice.get("foreach"):
        assert counts[0] <= 2, f"{counts[0]} graphs for 5 steps"


@pytest.mark.parametrize("name,convention", CASES, ids=IDS)
def test_many_small_and_large_parameters_equal_one_at_a_time_bitwise(name, convention):
    """Small tensors of a group are concatenated through the rule (in chunks), large ones go one by
    one; mixed dtypes and a parameter that starts late: the same numbers as foreach=False."""
    def make():
        g = torch.Generator().manual_seed(3)
        shapes = [(5, 4)] * 7 + [(40_000,), (9, 7), (3,)]
        return [torch.randn(s, generator=g, dtype=torch.float64 if i % 3 else torch.float32).requires_grad_()
                for i, s in enumerate(shapes)]

    runs = []
    for foreach in (None, False):
        params = make()
        opt = cls(name)(params, convention=convention, foreach=foreach)
        for step in range(4):
            opt.zero_grad()
            sum(((p.double() if p.dtype != torch.float64 else p).tanh() * (0.1 * i + step)).sum()
                for i, p in enumerate(params) if i != 2 or step >= 2).backward()
            opt.step()
        runs.append(params)
    for x, y in zip(*runs):  # bitwise (a rule that diverges on this toy loss diverges alike)
        torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True)
