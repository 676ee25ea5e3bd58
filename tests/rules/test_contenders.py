"""Today's contenders (rules/lion.py, adafactor.py, muon.py, schedulefree.py, soap.py, lamb.py).

- pytorch conventions through the ``optarena.optim`` drop-ins against their references for 200
  steps, in float64: lion-pytorch's Lion, torch.optim.Adafactor, torch.optim.Muon (2-D) with
  torch.optim.AdamW (the rest), schedulefree's AdamWScheduleFree, pytorch-optimizer's SOAP and Lamb;
- article conventions against NumPy transcriptions of the papers' algorithms (Schedule-Free's also
  against the authors' AdamWScheduleFreePaper), and Lion's closed form;
- the engine: a batch of runs that differ in their hyperparameters equals each run alone and the
  drop-in loop on each run's own (unbatched) shapes;
- validation: hyperparameters out of range raise a ValueError naming them.

SOAP is compared on square MLPs whose Shampoo factors are full rank from the first step (no more
than a one-dimensional null space): where a factor is rank-deficient at step 1 (the 5-8-3 MLP's
8x8 factor of an 8x5 gradient), its eigenbasis within the null space is set by rounding, and the
reference itself then gives another trajectory for a last-bit change of its input.
"""

from __future__ import annotations

import math

import lion_pytorch
import numpy as np
import pytest
import pytorch_optimizer
import schedulefree
import torch

import _oracle as O
from optarena import engine, optim, problems, rules
from optarena.problems.base import seed_generator
from optarena.trial import Trial

CONTENDERS = ("lion", "adafactor", "muon", "schedulefree_adamw", "soap", "lamb")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def assert_trained(params, init=None) -> None:
    """Guards a comparison against a vacuous pass: the parameters moved."""
    init = O.initial_params() if init is None else init
    assert max(float(np.max(np.abs(p - q))) for p, q in zip(params, init)) > 1e-2


# ---- pytorch conventions against the references ----------------------------------------------


@pytest.mark.parametrize("hp", [{}, dict(lr=1e-3, betas=(0.95, 0.98), weight_decay=0.1),
                                dict(lr=3e-4, betas=(0.8, 0.999), weight_decay=1.0)])
def test_lion_pytorch_equals_lion_pytorch(hp):
    ours = O.run_torch(lambda p: optim.Lion(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: lion_pytorch.Lion(p, **hp), O.TORCH_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="lion|pytorch|lion-pytorch")


@pytest.mark.parametrize("convention", ["article", "pytorch"])
def test_lion_moves_each_coordinate_by_exactly_lr_under_a_constant_gradient(convention):
    w = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64, requires_grad=True)
    g = torch.tensor([[1e-3, -4.0], [0.5, -1e-6]], dtype=torch.float64)
    opt = optim.Lion([w], lr=0.125, convention=convention)
    for k in range(1, 6):
        w.grad = g.clone()
        opt.step()
        expected = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64) - k * 0.125 * g.sign()
        assert torch.equal(w.detach(), expected)


def _torch_adafactor_hp(hp: dict) -> dict:
    out = {k: v for k, v in hp.items() if k not in ("eps1", "eps2")}
    if "eps1" in hp or "eps2" in hp:
        eps1 = hp.get("eps1", -1.0)
        out["eps"] = (None if eps1 == -1.0 else eps1, hp.get("eps2", 1e-3))
    return out


ADAFACTOR_SETTINGS = [{}, dict(lr=5e-3, beta2_decay=-0.6, eps1=1e-20, eps2=1e-4, d=2.0, weight_decay=0.1),
                      dict(lr=0.05, beta2_decay=-1.0, d=1.0, weight_decay=0.01)]


@pytest.mark.parametrize("hp", ADAFACTOR_SETTINGS)
def test_adafactor_pytorch_equals_torch_adafactor(hp):
    ours = O.run_torch(lambda p: optim.Adafactor(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.Adafactor(p, **_torch_adafactor_hp(hp)), O.TORCH_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="adafactor|pytorch|torch.optim")


def test_adafactor_pytorch_default_eps1_is_the_float32_machine_epsilon():
    """eps1=None in torch (-1 here) is the parameter dtype's machine epsilon: float32 here, where
    each step may round differently from torch's Python-float scalars (tolerance as for Keras)."""
    ours = O.run_torch(lambda p: optim.Adafactor(p, convention="pytorch"), O.TORCH_STEPS, dtype=torch.float32)
    ref = O.run_torch(lambda p: torch.optim.Adafactor(p), O.TORCH_STEPS, dtype=torch.float32)
    O.assert_close(ours, ref, rtol=O.KERAS_RTOL, atol=O.KERAS_ATOL, cell="adafactor|pytorch|torch.optim (float32)")


class _Both:
    """torch.optim.Muon for the 2-D parameters and torch.optim.AdamW for the others, stepped together."""

    def __init__(self, params, muon: dict, adamw: dict):
        self.parts = [torch.optim.Muon([p for p in params if p.ndim == 2], **muon),
                      torch.optim.AdamW([p for p in params if p.ndim != 2], **adamw)]

    def zero_grad(self):
        for o in self.parts:
            o.zero_grad()

    def step(self):
        for o in self.parts:
            o.step()


MUON_SETTINGS = [
    ({"lr": 0.02}, {"lr": 0.02}, {"lr": 0.02}),
    ({"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.05, "ns_steps": 3, "match_rms_adamw": True,
      "adamw_lr_ratio": 0.5, "adamw_beta1": 0.8, "adamw_beta2": 0.99, "adamw_eps": 1e-6, "adamw_weight_decay": 0.0},
     {"lr": 0.01, "momentum": 0.9, "nesterov": False, "weight_decay": 0.05, "ns_steps": 3,
      "adjust_lr_fn": "match_rms_adamw"},
     {"lr": 0.005, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.0}),
]


# torch.optim.Muon's Newton-Schulz runs in bfloat16 through torch.addmm, ours through the batched
# torch.baddbmm; the two round alike but for rare near-ties (addmm rounds once to float32, then
# to bfloat16), and a one-ulp bfloat16 difference then grows along a trajectory. So: each step
# from the reference's own state is compared (bitwise, but for such a tie, then within a
# bfloat16 rounding of the step), and 200 steps run freely stay within bfloat16 precision.
MUON_BF16_ATOL = 1e-2


def _muon_teacher_forced(ours_hp: dict, muon_hp: dict, adamw_hp: dict) -> tuple[int, int, float]:
    """Train with the references; at every step apply our rule to a copy of each matrix and its
    momentum before the reference steps. Returns (steps equal bitwise, steps, max |ours - ref| / lr)."""
    params = [torch.tensor(a, requires_grad=True) for a in O.initial_params()]
    reference = _Both(params, muon_hp, adamw_hp)
    muon = reference.parts[0]
    rule = rules.get("muon", "pytorch", **ours_hp)
    equal, total, worst = 0, 0, 0.0
    for step in range(O.TORCH_STEPS):
        reference.zero_grad()
        O.loss(params, step).backward()
        ours = {}
        for p in muon.param_groups[0]["params"]:
            copy = p.detach().clone().unsqueeze(0)
            buffer = muon.state[p]["momentum_buffer"].clone() if p in muon.state else torch.zeros_like(p)
            rule.update_(copy, p.grad.unsqueeze(0), {"momentum_buffer": buffer.unsqueeze(0)}, step + 1)
            ours[p] = copy[0]
        reference.step()
        for p, mine in ours.items():
            difference = float((mine - p.detach()).abs().max())
            equal, total, worst = equal + (difference == 0), total + 1, max(worst, difference / muon_hp["lr"])
    return equal, total, worst


@pytest.mark.parametrize("ours_hp,muon_hp,adamw_hp", MUON_SETTINGS)
def test_muon_pytorch_steps_as_torch_muon_from_the_same_state(ours_hp, muon_hp, adamw_hp):
    equal, total, worst = _muon_teacher_forced(ours_hp, muon_hp, adamw_hp)
    assert equal >= 0.99 * total and worst <= 2**-7  # bfloat16's relative precision, on |O| <= ~1


@pytest.mark.parametrize("ours_hp,muon_hp,adamw_hp", MUON_SETTINGS)
def test_muon_pytorch_equals_torch_muon_and_torch_adamw_for_the_rest(ours_hp, muon_hp, adamw_hp):
    ours = O.run_torch(lambda p: optim.Muon(p, convention="pytorch", **ours_hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: _Both(p, muon_hp, adamw_hp), O.TORCH_STEPS)
    assert_trained(ours)
    # W1 (8x5, tall: NS on its transpose) and W2 (3x8) are Muon's; b1 and b2 the AdamW fallback's.
    O.assert_close(ours, ref, rtol=0.0, atol=MUON_BF16_ATOL, cell="muon|pytorch|torch.optim (bfloat16 NS)")


def test_muon_pytorch_defaults_equal_torch_defaults():
    ours = O.run_torch(lambda p: optim.Muon(p, convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: _Both(p, {}, {}), O.TORCH_STEPS)
    O.assert_close(ours, ref, rtol=0.0, atol=MUON_BF16_ATOL, cell="muon|pytorch|torch.optim (bfloat16 NS)")


def test_muon_fallback_is_torch_adamw_bitwise():
    """A Muon drop-in holding only vectors is torch.optim.AdamW, bit for bit."""
    ours = O.run_torch(lambda p: optim.Muon([p[1], p[3]], lr=0.01, adamw_lr_ratio=0.5, adamw_weight_decay=0.1,
                                            convention="pytorch"), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: torch.optim.AdamW([p[1], p[3]], lr=0.005, weight_decay=0.1), O.TORCH_STEPS)
    assert_trained([ours[1], ours[3]], [O.initial_params()[1], O.initial_params()[3]])
    for a, b in zip(ours, ref):
        assert np.array_equal(a, b)


SCHEDULEFREE_SETTINGS = [{}, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, warmup_steps=20, r=0.5,
                                  weight_lr_power=1.0)]


def _schedulefree_run(make, steps: int = O.TORCH_STEPS):
    """Train in train mode; return the training point y and, after eval(), the average x."""
    params = [torch.tensor(a, requires_grad=True) for a in O.initial_params()]
    opt = make(params)
    opt.train()
    for step in range(steps):
        opt.zero_grad()
        O.loss(params, step).backward()
        opt.step()
    y = [p.detach().numpy().copy() for p in params]
    opt.eval()
    return y, [p.detach().numpy().copy() for p in params]


@pytest.mark.parametrize("convention,reference", [("pytorch", schedulefree.AdamWScheduleFree),
                                                  ("article", schedulefree.AdamWScheduleFreePaper)])
@pytest.mark.parametrize("hp", SCHEDULEFREE_SETTINGS)
def test_schedulefree_equals_the_authors_package_at_y_and_after_eval_at_x(convention, reference, hp):
    ours_y, ours_x = _schedulefree_run(lambda p: optim.ScheduleFreeAdamW(p, convention=convention, **hp))
    ref_y, ref_x = _schedulefree_run(lambda p: reference(p, **hp))
    assert_trained(ours_x)
    cell = f"schedulefree_adamw|{convention}|schedulefree.{reference.__name__}"
    O.assert_close(ours_y, ref_y, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell=cell)
    O.assert_close(ours_x, ref_x, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell=cell)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(ours_x, ours_y)) > 1e-4  # x and y differ


def test_schedulefree_train_after_eval_returns_to_y_and_step_at_x_is_refused():
    params = [torch.tensor(a, requires_grad=True) for a in O.initial_params()]
    opt = optim.ScheduleFreeAdamW(params, lr=1e-2, convention="pytorch")
    for step in range(10):
        opt.zero_grad()
        O.loss(params, step).backward()
        opt.step()
    y = [p.detach().clone() for p in params]
    opt.eval()
    opt.eval()  # a second eval() is a no-op, as in the reference
    x = [p.detach().clone() for p in params]
    assert any(not torch.equal(a, b) for a, b in zip(x, y))
    with pytest.raises(RuntimeError, match="train"):
        opt.step()
    opt.train()
    for a, b in zip(params, y):
        torch.testing.assert_close(a.detach(), b, rtol=1e-12, atol=1e-14)


def _square_mlp(width: int, seed: int = 7):
    """An MLP width-width-width (tanh) on a fixed regression set: every Shampoo factor is
    width x width and of full rank from the first step (batches of 16 > width)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(64, width, generator=g, dtype=torch.float64)
    y = torch.randn(64, width, generator=g, dtype=torch.float64)
    init = [torch.randn(width, width, generator=g, dtype=torch.float64) / width**0.5,
            0.1 * torch.randn(width, generator=g, dtype=torch.float64),
            torch.randn(width, width, generator=g, dtype=torch.float64) / width**0.5,
            0.1 * torch.randn(width, generator=g, dtype=torch.float64)]

    def run(make, steps: int = O.TORCH_STEPS):
        params = [t.clone().requires_grad_(True) for t in init]
        opt = make(params)
        for step in range(steps):
            w1, b1, w2, b2 = params
            lo = (step % 4) * 16
            opt.zero_grad()
            (0.5 * ((torch.tanh(x[lo:lo + 16] @ w1.T + b1) @ w2.T + b2 - y[lo:lo + 16]) ** 2).sum(1).mean()).backward()
            opt.step()
        return [p.detach().numpy().copy() for p in params]

    return run, [t.numpy() for t in init]


SOAP_SETTINGS = [
    (6, {}),
    (6, dict(lr=1e-2, betas=(0.9, 0.99), shampoo_beta=0.9, weight_decay=0.1, precondition_frequency=5,
             normalize_gradient=True)),
    # vectors preconditioned too: b b^T of a 2-vector has a one-dimensional null space (a sign)
    (2, dict(lr=3e-2, precondition_1d=True, correct_bias=False, precondition_frequency=3)),
]


@pytest.mark.parametrize("width,hp", SOAP_SETTINGS)
def test_soap_pytorch_equals_pytorch_optimizer_soap(width, hp):
    run, init = _square_mlp(width)
    ours = run(lambda p: optim.SOAP(p, convention="pytorch", **hp))
    ref = run(lambda p: pytorch_optimizer.SOAP(p, **hp))
    assert_trained(ours, init)
    # float64 throughout but the eigenbasis refresh: the reference takes QR in float32
    O.assert_close(ours, ref, rtol=1e-9, atol=1e-11, cell="soap|pytorch|pytorch_optimizer")


LAMB_SETTINGS = [{}, dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1),
                 dict(lr=1e-2, weight_decay=0.1, weight_decouple=False)]


@pytest.mark.parametrize("hp", LAMB_SETTINGS)
@pytest.mark.parametrize("foreach", [None, False])
def test_lamb_pytorch_equals_pytorch_optimizer_lamb(hp, foreach):
    """Both of the reference's code paths: foreach (its default) and the per-tensor loop."""
    ours = O.run_torch(lambda p: optim.LAMB(p, convention="pytorch", **hp), O.TORCH_STEPS)
    ref = O.run_torch(lambda p: pytorch_optimizer.Lamb(p, foreach=foreach, **hp), O.TORCH_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=O.TORCH_RTOL, atol=O.TORCH_ATOL, cell="lamb|pytorch|pytorch_optimizer")


# ---- article conventions against NumPy transcriptions of the papers ---------------------------


def _article_adafactor(lr, decay, eps1, eps2, d):
    """Shazeer & Stern 2018, Algorithm 4 (matrices, sums as written) and 5 (vectors)."""

    def update(t, i, w, g, s):
        beta2_t = 1 - t**decay
        rho = min(lr, 1 / math.sqrt(t))
        alpha = max(eps2, np.sqrt(np.mean(w * w))) * rho
        g2 = g * g + eps1
        if w.ndim == 2:
            s["R"] = beta2_t * s.get("R", 0.0) + (1 - beta2_t) * g2.sum(axis=1)  # (G^2 + eps1 1 1^T) 1_m
            s["C"] = beta2_t * s.get("C", 0.0) + (1 - beta2_t) * g2.sum(axis=0)  # 1_n^T (G^2 + eps1 1 1^T)
            v = np.outer(s["R"], s["C"]) / s["R"].sum()
        else:
            v = s["V"] = beta2_t * s.get("V", 0.0) + (1 - beta2_t) * g2
        u = g / np.sqrt(v)
        u_hat = u / max(1.0, np.sqrt(np.mean(u * u)) / d)
        return w - alpha * u_hat

    return update


@pytest.mark.parametrize("hp", [{}, dict(lr=0.05, beta2_decay=-0.6, eps1=1e-20, eps2=1e-4, d=2.0)])
def test_adafactor_article_equals_the_papers_algorithm(hp):
    h = {**rules.defaults("adafactor", "article"), **hp}
    ours = O.run_torch(lambda p: optim.Adafactor(p, convention="article", **hp), O.ARTICLE_STEPS)
    ref = O.run_numpy(_article_adafactor(h["lr"], h["beta2_decay"], h["eps1"], h["eps2"], h["d"]), O.ARTICLE_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="adafactor|article|numpy")


def _numpy_adamw(t, w, g, s, lr, b1, b2, eps, wd):
    s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
    s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
    w = w - lr * wd * w
    return w - lr * (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps)


def _article_muon(lr, mu, nesterov, wd, eps, steps, adamw):
    """Jordan et al. 2024: B = mu*B + G; O = NS5(B) (or of G + mu*B); W -= lr*wd*W + lr*O; AdamW otherwise."""
    a, b, c = 3.4445, -4.7750, 2.0315

    def newton_schulz(g):
        x = g / (np.linalg.norm(g) + eps)
        tall = g.shape[0] > g.shape[1]
        x = x.T if tall else x
        for _ in range(steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        return x.T if tall else x

    def update(t, i, w, g, s):
        if w.ndim != 2:
            return _numpy_adamw(t, w, g, s, **adamw)
        s["B"] = mu * s.get("B", 0.0) + g
        o = newton_schulz(g + mu * s["B"] if nesterov else s["B"])
        return w - lr * wd * w - lr * o

    return update


@pytest.mark.parametrize("hp", [dict(lr=0.01), dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1, ns_steps=3,
                                                   adamw_lr_ratio=0.5, adamw_weight_decay=0.1)])
def test_muon_article_equals_the_posts_algorithm(hp):
    h = {**rules.defaults("muon", "article"), **hp}
    adamw = dict(lr=h["lr"] * h["adamw_lr_ratio"], b1=h["adamw_beta1"], b2=h["adamw_beta2"], eps=h["adamw_eps"],
                 wd=h["adamw_weight_decay"])
    ours = O.run_torch(lambda p: optim.Muon(p, convention="article", **hp), O.ARTICLE_STEPS)
    ref = O.run_numpy(_article_muon(h["lr"], h["momentum"], h["nesterov"], h["weight_decay"], h["eps"],
                                    int(h["ns_steps"]), adamw), O.ARTICLE_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=1e-9, atol=1e-11, cell="muon|article|numpy")


def test_schedulefree_article_equals_algorithm_1_in_x_and_z():
    """Defazio et al. 2024, Algorithm 1, with the three sequences kept explicitly."""
    lr, b1, b2, eps, wd, warmup = 1e-2, 0.9, 0.999, 1e-8, 0.1, 10
    xs = {}

    def update(t, i, y, g, s):
        if not s:
            s.update(x=y.copy(), z=y.copy(), v=np.zeros_like(y), lr_max=-1.0, weight_sum=0.0)
        lr_t = lr * min(1.0, t / warmup) * math.sqrt(1 - b2**t)
        s["lr_max"] = max(s["lr_max"], lr_t)
        weight = s["lr_max"] ** 2  # c_{t+1} = lr_t^2 / sum_i lr_i^2 while lr_t does not decrease
        s["weight_sum"] += weight
        c = weight / s["weight_sum"]
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        s["z"] = s["z"] - lr_t * (g / (np.sqrt(s["v"]) + eps) + wd * y)
        s["x"] = (1 - c) * s["x"] + c * s["z"]
        xs[i] = s["x"]
        return (1 - b1) * s["z"] + b1 * s["x"]

    ref_y = O.run_numpy(update, O.ARTICLE_STEPS)
    ours_y, ours_x = _schedulefree_run(lambda p: optim.ScheduleFreeAdamW(
        p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, warmup_steps=warmup, convention="article"), O.ARTICLE_STEPS)
    assert_trained(ours_x)
    O.assert_close(ours_y, ref_y, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="schedulefree_adamw|article|numpy")
    O.assert_close(ours_x, [xs[i] for i in range(4)], rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL,
                   cell="schedulefree_adamw|article|numpy")


def _article_lamb(lr, b1, b2, eps, wd):
    """You et al. 2020, Algorithm 2 with phi(z) = z."""

    def update(t, i, w, g, s):
        s["m"] = b1 * s.get("m", 0.0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0.0) + (1 - b2) * g * g
        r = (s["m"] / (1 - b1**t)) / (np.sqrt(s["v"] / (1 - b2**t)) + eps) + wd * w
        w_norm, r_norm = np.linalg.norm(w), np.linalg.norm(r)
        trust = w_norm / r_norm if w_norm > 0 and r_norm > 0 else 1.0
        return w - lr * trust * r

    return update


@pytest.mark.parametrize("hp", [dict(lr=1e-2), dict(lr=1e-2, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.1)])
def test_lamb_article_equals_the_papers_algorithm(hp):
    h = {**rules.defaults("lamb", "article"), **{k: v for k, v in hp.items() if k != "betas"}}
    b1, b2 = hp.get("betas", (h["beta1"], h["beta2"]))
    ours = O.run_torch(lambda p: optim.LAMB(p, convention="article", **hp), O.ARTICLE_STEPS)
    ref = O.run_numpy(_article_lamb(h["lr"], b1, b2, h["eps"], h["weight_decay"]), O.ARTICLE_STEPS)
    assert_trained(ours)
    O.assert_close(ours, ref, rtol=O.ARTICLE_RTOL, atol=O.ARTICLE_ATOL, cell="lamb|article|numpy")


# ---- the engine: a batch of runs equals each run alone and the drop-in ------------------------

ENGINE_STEPS = 30
# Three settings per optimizer and convention; the second and third vary hyperparameters that the
# engine then stacks as per-run tensors (ns_steps, precondition_frequency, warmup_steps and eps1
# included: each run keeps its own count, frequency, warmup or epsilon within the batch).
ENGINE_SETTINGS = {
    "lion": [{"lr": 1e-3}, {"lr": 2e-3, "beta1": 0.8}, {"lr": 5e-4, "weight_decay": 0.1}],
    "adafactor": [{"lr": 1e-2}, {"lr": 2e-2, "beta2_decay": -0.6, "d": 2.0}, {"lr": 5e-3, "eps1": 1e-20}],
    "muon": [{"lr": 0.02}, {"lr": 0.04, "momentum": 0.9, "ns_steps": 3},
             {"lr": 0.01, "weight_decay": 0.01, "adamw_lr_ratio": 0.1}],
    "schedulefree_adamw": [{"lr": 2e-3}, {"lr": 4e-3, "beta1": 0.8, "warmup_steps": 10},
                           {"lr": 1e-3, "weight_decay": 0.1}],
    "soap": [{"lr": 3e-3}, {"lr": 6e-3, "precondition_frequency": 5, "shampoo_beta": 0.9},
             {"lr": 1e-3, "weight_decay": 0.1}],
    "lamb": [{"lr": 1e-2}, {"lr": 2e-2, "beta1": 0.8}, {"lr": 5e-3, "weight_decay": 0.1}],
}


def _dropin_final_loss(problem, trial: Trial) -> float:
    """The loop a user writes with the drop-in, on each run's own shapes (the run dimension of 1
    only added for the problem's batched loss): train loss at the end, at the evaluation point."""
    start = problem.init_params(torch.tensor([trial.seed]))
    leaves = {k: v[0].detach().clone().requires_grad_(True) for k, v in start.items()}
    opt = optim.create(trial.optimizer, leaves.values(), trial.convention, **trial.hparams)
    generator = seed_generator(trial.seed, "batches")
    for step in range(trial.steps):
        batch = tuple(b.unsqueeze(0) for b in problem.batch(step, generator))
        opt.zero_grad()
        problem.loss({k: v.unsqueeze(0) for k, v in leaves.items()}, batch).sum().backward()
        opt.step()
    opt.eval()
    with torch.no_grad():
        return float(problem.evaluate({k: v.unsqueeze(0) for k, v in leaves.items()})["train_loss"][0])


# Batched and single-run matrix products round differently (and differently again with another
# number of threads), and these rules' matrix functions amplify it: measured up to 2.4e-4 for SOAP
# (the eigenbases of its 64 x 64 statistic of rank <= 10 are not unique), 2.1e-5 for Muon,
# <= 1.2e-7 for the others.
DROPIN_TOLERANCE = {"soap": 1e-3, "muon": 1e-4}


@pytest.fixture(scope="module")
def contender_stack(without_hand_gradient):
    """digits_mlp differentiated by autograd, as the drop-in loop does. The hand-written gradient
    equals autograd's to float32 rounding (tests/problems/test_hand_gradients.py), but SOAP's
    eigenbases of rank-deficient statistics and Muon's Newton-Schulz iteration amplify a 1e-7
    difference in the gradient to up to 4.5e-3 in the loss after 30 steps (measured); here the
    batching of the rules is tested."""
    problem = without_hand_gradient(problems.get("digits_mlp"))
    trials = [Trial("digits_mlp", name, convention, h, i % 2, ENGINE_STEPS)
              for name, settings in ENGINE_SETTINGS.items()
              for convention in rules.entry(name).conventions
              for i, h in enumerate(settings)]
    return problem, trials, engine.run(problem, trials)


def test_every_contender_and_convention_is_in_the_engine_stack(contender_stack):
    _, trials, batched = contender_stack
    assert {(t.optimizer, t.convention) for t in trials} == {
        (n, c) for n in CONTENDERS for c in rules.entry(n).conventions}
    for t, r in zip(trials, batched):
        assert r.status == "done", (t, r.error)
        assert r.curve["train_loss"][-1] < r.curve["train_loss"][0], t


def test_a_batch_of_contender_runs_equals_each_run_alone(contender_stack):
    problem, trials, batched = contender_stack
    for t, r in zip(trials, batched):
        alone = engine.run(problem, [t])[0]
        assert alone.curve["step"] == r.curve["step"]
        for key in r.curve:
            np.testing.assert_allclose(r.curve[key], alone.curve[key], rtol=0, atol=1e-5, err_msg=f"{t}: {key}")


def test_a_batch_of_contender_runs_equals_the_dropin_loop(contender_stack):
    problem, trials, batched = contender_stack
    for t, r in zip(trials, batched):
        assert abs(r.final["train_loss"] - _dropin_final_loss(problem, t)) <= DROPIN_TOLERANCE.get(t.optimizer, 1e-5), t


# ---- the registry and validation -------------------------------------------------------------


def test_the_contenders_are_their_own_family():
    assert rules.names("contender") == list(CONTENDERS)
    assert len(rules.names("article")) == 8 and not set(CONTENDERS) & set(rules.names(("article", "extra")))
    for name in CONTENDERS:
        assert set(rules.entry(name).conventions) == {"article", "pytorch"}
        assert optim.OPTIMIZERS[name].__name__ == rules.class_name(name)


BAD = [
    ("lion", dict(betas=(1.0, 0.99)), "betas"),
    ("lion", dict(weight_decay=-0.1), "weight_decay"),
    ("adafactor", dict(beta2_decay=0.5), "beta2_decay"),
    ("adafactor", dict(eps1=-0.5), "eps1"),
    ("adafactor", dict(eps2=-1e-3), "eps2"),
    ("adafactor", dict(d=0.5), "d"),
    ("muon", dict(momentum=1.0), "momentum"),
    ("muon", dict(ns_steps=2.5), "ns_steps"),
    ("muon", dict(ns_steps=0), "ns_steps"),
    ("muon", dict(ns_steps=100), "ns_steps"),
    ("muon", dict(adamw_beta2=1.5), "adamw_beta2"),
    ("muon", dict(adamw_eps=0.0), "adamw_eps"),
    ("muon", dict(adamw_lr_ratio=-1.0), "adamw_lr_ratio"),
    ("muon", dict(nesterov=1), "nesterov"),
    ("schedulefree_adamw", dict(betas=(0.0, 0.999)), "betas"),
    ("schedulefree_adamw", dict(warmup_steps=2.5), "warmup_steps"),
    ("schedulefree_adamw", dict(warmup_steps=-1), "warmup_steps"),
    ("schedulefree_adamw", dict(r=-1.0), "r"),
    ("schedulefree_adamw", dict(weight_lr_power=math.nan), "weight_lr_power"),
    ("soap", dict(shampoo_beta=1.0), "shampoo_beta"),
    ("soap", dict(shampoo_beta=-0.5), "shampoo_beta"),
    ("soap", dict(precondition_frequency=0), "precondition_frequency"),
    ("soap", dict(eps=0.0), "eps"),
    ("lamb", dict(eps=-1e-6), "eps"),
    ("lamb", dict(weight_decay=math.inf), "weight_decay"),
]


@pytest.mark.parametrize("name,hp,key", BAD, ids=[f"{n}-{k}-{list(h.values())[0]}" for n, h, k in BAD])
@pytest.mark.parametrize("convention", ["article", "pytorch"])
def test_out_of_range_hyperparameters_are_refused_naming_them(name, hp, key, convention):
    params = [torch.zeros(3, 2, dtype=torch.float64, requires_grad=True)]
    for make in (lambda: optim.OPTIMIZERS[name](params, convention=convention, **hp),
                 lambda: rules.get(name, convention=convention, **hp)):
        with pytest.raises(ValueError, match=rf"\b{key}\b"):
            make()


@pytest.mark.parametrize("name", CONTENDERS)
def test_the_keras_convention_is_absent_and_says_which_exist(name):
    with pytest.raises(ValueError, match=r"no 'keras' convention.*'article' or 'pytorch'"):
        optim.OPTIMIZERS[name]([torch.zeros(2, requires_grad=True)], convention="keras")


def test_torch_style_none_defaults_are_accepted():
    """shampoo_beta=None (beta2) and eps1=None (the dtype's epsilon) are the defaults, as in the references."""
    params = [torch.zeros(2, requires_grad=True)]
    assert optim.SOAP(params, shampoo_beta=None, convention="pytorch").defaults["shampoo_beta"] == -1.0
    assert optim.Adafactor(params, eps1=None, convention="pytorch").defaults["eps1"] == -1.0
