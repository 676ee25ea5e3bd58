"""fused=True: the compiled executor (optarena.fused) against the eager rule, every elementwise
optimizer and convention; a scheduler changing lr does not recompile; whole-tensor rules refuse it."""

from __future__ import annotations

import pytest
import torch

from optarena import fused, optim, rules, torch_kernels

ELEMENTWISE = [(name, c) for name, e in rules.entries().items() for c, conv in e.conventions.items()
               if conv.rule.elementwise]
# small (concatenated), medium, large (one tensor per kernel slot), a 0-d-free mix of shapes
SHAPES = [(30, 20), (7,), (5, 3), (100,), (40_000,), (200, 200)]


def _run(name: str, convention: str, use_fused: bool, steps: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(s, generator=g).requires_grad_() for s in SHAPES]
    grads = [[torch.randn(s, generator=g) * 0.1 for s in SHAPES] for _ in range(steps)]
    extra = {"momentum": 0.9} if name == "sgd" and "momentum" in rules.defaults(name, convention) else {}
    opt = optim.create(name, params, convention, fused=True if use_fused else None, **extra)
    for gs in grads:
        for p, grad in zip(params, gs):
            p.grad = grad.clone()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("name,convention", ELEMENTWISE)
def test_fused_equals_eager(name, convention):
    eager, compiled = _run(name, convention, False), _run(name, convention, True)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    if convention == "pytorch" and name in torch_kernels.FUSED:
        return  # torch.optim's own fused kernel runs (tests/test_optim.py: bitwise equal to torch.optim)
    assert any(k[0].name == rules.build(name, convention).name for k in fused.COMPILE_SECONDS), \
        "the compiled kernel was not used (it fell back to the eager rule)"


def test_scheduler_and_state_dict_do_not_recompile():
    import torch._dynamo.utils as dynamo_utils

    params = [torch.randn(50, 40, requires_grad=True), torch.randn(40_000, requires_grad=True)]
    opt = optim.Adam(params, lr=1e-2, convention="pytorch", fused=True)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    before = dynamo_utils.counters["stats"]["unique_graphs"]
    for _ in range(10):
        opt.step()
        scheduler.step()
    assert dynamo_utils.counters["stats"]["unique_graphs"] == before
    reference = torch.optim.Adam([p.detach().clone().requires_grad_() for p in params], lr=1e-2)
    reference.load_state_dict(opt.torch_state_dict())  # the state is the eager drop-in's
    assert reference.state_dict()["state"][0]["step"].item() == 11


def test_whole_tensor_rules_refuse_fused():
    with pytest.raises(RuntimeError, match="elementwise"):
        optim.Muon([torch.randn(4, 4, requires_grad=True)], fused=True)


def test_compile_failure_falls_back_to_the_eager_rule(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(fused, "_KERNELS", {})
    monkeypatch.setattr(fused, "_make", lambda *a: broken)
    eager = _run("rmsprop", "keras", False)
    with pytest.warns(RuntimeWarning, match="could not be compiled"):
        compiled = _run("rmsprop", "keras", True)
    for a, b in zip(eager, compiled):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_share_scalars_merges_repeated_scalar_work_and_never_an_in_place_op():
    """The pass before inductor merges a power of the step computed once per tensor; operations on
    tensors (and in-place ones even on the same inputs) stay as they are; the result is unchanged."""

    def f(l_step_, l_values_0_, x, y):
        a = 1 - l_values_0_ ** l_step_
        b = 1 - l_values_0_ ** l_step_
        x.mul_(a)
        y.mul_(b)
        x.mul_(a)
        return x * 2, y * 2

    gm = fused.share_scalars(torch.fx.symbolic_trace(f))
    targets = [str(n.target) for n in gm.graph.nodes if n.op in ("call_function", "call_method")]
    assert targets.count("<built-in function pow>") == 1 and targets.count("<built-in function sub>") == 1
    assert targets.count("mul_") == 3 and targets.count("<built-in function mul>") == 2
    args = (torch.tensor(3.0), torch.tensor(0.9))
    x, y = torch.randn(5), torch.randn(5)
    expected = f(*args, x.clone(), y.clone())
    for got, want in zip(gm(*args, x.clone(), y.clone()), expected):
        assert torch.equal(got, want)


# -- flat storage (optarena.flat): one call per group, compiled where the group is large enough ---

def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 16), torch.nn.Tanh(),
                               torch.nn.Linear(16, 3))


def _train(model, opt, steps: int, set_to_none: bool = True, between=None) -> None:
    g = torch.Generator().manual_seed(1)
    for t in range(steps):
        x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
        opt.zero_grad(set_to_none=set_to_none)
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
        if between is not None:
            between(t)


@pytest.fixture(params=["compiled", "eager"])
def flat_update(request, monkeypatch):
    """How a flat group is updated: "compiled" (the threshold lowered so that this small model's
    group goes through the compiled kernel, as a large model's does), or "eager" (the small group
    below `fused.MIN_COMPILED_VALUES`, as it is by default: then no compiled call is made)."""
    if request.param == "compiled":
        monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", 0)
    else:
        def refuse(*args, **kwargs):
            raise AssertionError("a group below MIN_COMPILED_VALUES went through the compiled kernel")
        monkeypatch.setattr(fused, "update_", refuse)
    return request.param


@pytest.mark.parametrize("set_to_none,maximize", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("convention", ["article", "keras"])
def test_flat_group_trains_as_the_eager_rule(convention, set_to_none, maximize, flat_update):
    eager, flat = _model(), _model()
    opt_e = optim.Adam(eager.parameters(), lr=1e-2, convention=convention, maximize=maximize)
    opt_f = optim.Adam(flat.parameters(), lr=1e-2, convention=convention, fused=True, maximize=maximize)
    _train(eager, opt_e, 20, set_to_none)
    _train(flat, opt_f, 20, set_to_none)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if flat_update == "compiled" else {"rtol": 0, "atol": 0}
    for a, b in zip(eager.parameters(), flat.parameters()):
        torch.testing.assert_close(b, a, **tolerance)
    # every parameter, gradient and state tensor is a view of the group's one flat buffer each
    storage = opt_f._flat[0]
    params = list(flat.parameters())
    assert all(p.untyped_storage().data_ptr() == storage.param.untyped_storage().data_ptr() for p in params)
    assert all(opt_f.state[p][k].untyped_storage().data_ptr() == storage.state[k].untyped_storage().data_ptr()
               for p in params for k in ("m", "v"))
    assert all(p.grad.untyped_storage().data_ptr() == storage.grad.untyped_storage().data_ptr() for p in params)
    for p in params:  # the optimizer state is still the eager drop-in's, tensor by tensor
        torch.testing.assert_close(opt_f.state[p]["m"], opt_e.state[dict(zip(params, eager.parameters()))[p]]["m"],
                                   **tolerance)


@pytest.mark.parametrize("name", ["sgd", "adam", "adagrad"])
@pytest.mark.parametrize("maximize", [False, True])
def test_pytorch_convention_small_fused_group_is_the_rule_over_flat_storage(name, maximize):
    """convention="pytorch", fused=True, a group under `fused.MIN_COMPILED_VALUES` values: not torch's
    fused kernel (its per-tensor work and call cost more there) but the eager rule over the group's
    flat storage, bit for bit the default path; maximize honoured."""
    models = _model(), _model()
    kwargs = {"lr": 1e-2, "convention": "pytorch", "maximize": maximize} | ({"momentum": 0.9} if name == "sgd" else {})
    opt_d = optim.create(name, models[0].parameters(), **kwargs)
    opt_f = optim.create(name, models[1].parameters(), fused=True, **kwargs)
    _train(models[0], opt_d, 10, True)
    _train(models[1], opt_f, 10, True)
    assert 0 in opt_f._flat
    for a, b in zip(*(m.parameters() for m in models)):
        assert torch.equal(a, b)


@pytest.mark.parametrize("convention", ["article", "pytorch", "keras"])
def test_complex_parameters_with_fused_train_as_the_default_path(convention):
    """fused=True on complex parameters (their real views, as torch.optim takes them): never flat
    storage, which would re-point the view and not the parameter; the default path's numbers."""
    torch.manual_seed(0)
    a = [torch.randn(shape, dtype=torch.complex64, requires_grad=True) for shape in ((4, 3), (5,))]
    b = [x.detach().clone().requires_grad_() for x in a]
    opts = optim.Adam(a, lr=0.1, convention=convention), optim.Adam(b, lr=0.1, convention=convention, fused=True)
    for _ in range(5):
        for params, opt in zip((a, b), opts):
            opt.zero_grad()
            sum((p.abs() ** 2).sum() for p in params).backward()
            opt.step()
    assert not opts[1]._flat
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("convention,threshold", [("article", 0), ("article", None), ("pytorch", None)])
def test_a_hand_edit_of_a_groups_lr_reaches_the_flat_fast_path(convention, threshold, monkeypatch):
    """The rule is rebuilt when a group's hyperparameter changes (here by hand, lr = 0: the next step
    leaves every parameter where it is), also on the flat fast path, compiled (threshold 0) or eager."""
    if threshold is not None:
        monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", threshold)
    model = _model()
    opt = optim.Adam(model.parameters(), lr=1e-2, convention=convention, fused=True)
    _train(model, opt, 3)
    assert 0 in opt._flat
    opt.param_groups[0]["lr"] = 0.0
    before = [p.detach().clone() for p in model.parameters()]
    _train(model, opt, 1)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    opt.param_groups[0]["lr"] = 1e-2
    _train(model, opt, 1)
    assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_flat_group_survives_load_state_dict_and_repointed_parameters(flat_update):
    eager, flat = _model(), _model()
    opt_e = optim.Adam(eager.parameters(), lr=1e-2)
    opt_f = optim.Adam(flat.parameters(), lr=1e-2, fused=True)
    _train(eager, opt_e, 5)
    _train(flat, opt_f, 5)
    saved_e, saved_f = opt_e.state_dict(), opt_f.state_dict()
    saved_f = {"state": {i: {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                         for i, s in saved_f["state"].items()}, "param_groups": saved_f["param_groups"]}
    opt_e.load_state_dict(saved_e)
    opt_f.load_state_dict(saved_f)  # new state tensors: the next step flattens again from them

    def repoint(t):
        if t == 2:  # the user replaces a parameter's data: noticed, flattened again
            first = next(flat.parameters())
            first.data = first.data.clone()
            next(eager.parameters()).data = next(eager.parameters()).data.clone()

    _train(eager, opt_e, 6, between=repoint)
    _train(flat, opt_f, 6, between=repoint)
    for a, b in zip(eager.parameters(), flat.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    assert opt_f._flat[0].holds(list(flat.parameters()), [opt_f.state[p] for p in flat.parameters()])


def test_a_parameter_without_gradient_takes_the_per_tensor_path(monkeypatch):
    """torch.optim skips a parameter whose grad is None (its moments do not move): so does the
    flat group, by not being flat that step."""
    monkeypatch.setattr(fused, "MIN_COMPILED_VALUES", 0)  # the flat steps compiled, as a large group's
    eager, flat = _model(), _model()
    opt_e = optim.Adam(eager.parameters(), lr=1e-2, convention="keras")
    opt_f = optim.Adam(flat.parameters(), lr=1e-2, convention="keras", fused=True)

    def drop_last_grad(model):
        def hook(t):
            if t % 2:
                list(model.parameters())[-1].grad = None
        return hook

    for model, opt in ((eager, opt_e), (flat, opt_f)):
        g = torch.Generator().manual_seed(1)
        for t in range(8):
            x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            drop_last_grad(model)(t)
            opt.step()
    for a, b in zip(eager.parameters(), flat.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_mixed_dtypes_stay_per_tensor():
    params = [torch.randn(10, requires_grad=True), torch.randn(10, dtype=torch.float64, requires_grad=True)]
    opt = optim.Adam(params, fused=True)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    assert not opt._flat


@pytest.mark.parametrize("convention", ["article", "pytorch", "keras"])
def test_nadam_flat_keeps_one_mu_product_per_parameter(convention):
    """NAdam's 0-d mu_product is updated once per step on the flat group and copied to every
    parameter's state; after a step without one parameter's gradient (per-tensor path) the values
    differ and the group stays per-tensor, as the eager rule."""
    eager, flat = _model(), _model()
    opt_e = optim.Nadam(eager.parameters(), convention=convention)
    opt_f = optim.Nadam(flat.parameters(), convention=convention, fused=True)
    for model, opt in ((eager, opt_e), (flat, opt_f)):
        g = torch.Generator().manual_seed(1)
        for t in range(8):
            x, y = torch.randn(32, 6, generator=g), torch.randn(32, 3, generator=g)
            opt.zero_grad()
            torch.nn.functional.mse_loss(model(x), y).backward()
            if t == 5:
                list(model.parameters())[-1].grad = None
            opt.step()
            if opt is opt_f and t == 4:
                assert opt._flat  # flat until the step without a gradient
    assert not opt_f._flat
    for a, b in zip(eager.parameters(), flat.parameters()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    for a, b in zip(eager.parameters(), flat.parameters()):
        assert opt_f.state[b]["mu_product"].item() == pytest.approx(opt_e.state[a]["mu_product"].item(), rel=1e-6)
        assert opt_f.state[b]["step"] == opt_e.state[a]["step"]
