"""What each DDPM training loss computes and where its gradient flows (elbo_lab/ddpm/train.py, ``Trainer.step``).

For one real optimizer step of a tiny run, the loss ``Trainer.step`` returns is recomputed from the engine's own
terms at the same minibatch, timesteps k, weights w = 1/(T p_k) and noise ε (replayed from copies of the run's
generators):

- ``simple``: mean_b w_b ‖ε − ε̂‖²/D                                           (E10, ``simple_term``)
- ``vlb``:    mean_b w_b T L_{k_b} / (D ln 2)                                   (E7 terms, ``bound_term``)
- ``hybrid``: mean_b w_b (‖ε − ε̂‖²/D + λ T L_{k_b} / (D ln 2)), ε̂ detached in L (improved DDPM)

and the gradient that reaches the model's outputs is compared with its closed form: for ``simple`` and
``hybrid`` ∂loss/∂ε̂ = −2 w (ε − ε̂)/(D B) exactly (the vlb part must not train the mean), ∂loss/∂v = 0 for
``simple``, and = λ T w/(B D ln 2) ∂L/∂v for ``hybrid``; for ``vlb`` both outputs get the gradient of the bound.
The importance sampler is warmed up with unequal histories so that w ≠ 1 (a dropped weight shows).

Kills the seeded bugs of issue 14: hybrid without ``detach``, hybrid without its factor T, vlb without 1/(T p_k).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elbo_lab.bound import bound_term, simple_term
from elbo_lab.ddpm import TrainConfig
from elbo_lab.ddpm.train import Trainer

F64 = torch.float64


class _Recorder:
    """Stands in for ``trainer.model``: calls it, keeps the outputs ε̂ (and v) with ``retain_grad``."""

    def __init__(self, model):
        self.inner, self.eps, self.v = model, None, None

    @property
    def net(self):
        return self.inner.net

    def train(self, mode=True):
        self.inner.train(mode)

    def __call__(self, xt, k):
        out = self.inner(xt, k)
        eps, v = out if isinstance(out, tuple) else (out, None)
        eps.retain_grad()
        if v is not None:
            v.retain_grad()
        self.eps, self.v = eps, v
        return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("loss") / "v.npy"
    np.save(path, np.random.default_rng(0).integers(0, 5, size=(80, 6)))
    return str(path)


def _trainer(data_file, tmp_path, **over) -> Trainer:
    cfg = dict(
        data=data_file,
        levels=5,
        T=10,
        steps=1,
        batch_size=16,
        dropout=0.0,  # deterministic forward pass: the replay below sees the same network function
        device="cpu",
        grad_clip=0.0,
        param="eps",
        variance="learned",
        sampler="importance",
        hybrid_lambda=0.3,  # large, so a missing factor shows far above float rounding
        eval_every=100,
        log_every=100,
        seed=3,
    )
    cfg.update(over)
    tr = Trainer(TrainConfig(**cfg), tmp_path, log=lambda *a: None)
    if tr.sampler.kind == "importance":  # warmed up, with unequal second moments: p_k ≠ 1/T, so w ≠ 1
        tr.sampler.values[:] = np.linspace(0.5, 20.0, tr.cfg.T)[:, None] * (1 + 0.1 * np.arange(tr.sampler.history))
        tr.sampler.counts[:] = tr.sampler.history
    return tr


def _replay(tr: Trainer):
    """The minibatch, k, w and ε that the next ``tr.step()`` will use (from copies of the run's generators)."""
    B = tr.cfg.batch_size
    assert tr.pos + B <= tr.perm.shape[0]
    x0 = tr.fit[tr.perm[tr.pos : tr.pos + B]]
    g_cpu = torch.Generator().manual_seed(0)
    g_cpu.set_state(tr.g_cpu.get_state())
    k, w = tr.sampler.sample(B, g_cpu)
    g_dev = torch.Generator().manual_seed(0)
    g_dev.set_state(tr.g_dev.get_state())
    noise = torch.randn(x0.shape, generator=g_dev, dtype=F64)
    return x0, k, w.to(F64), noise


def _engine_terms(tr: Trainer, x0, k, noise):
    """(L_k (B,) nats, ‖ε − ε̂‖²/D (B,)) from the engine's bound_term and simple_term at the replayed draw."""
    with torch.no_grad():
        L = bound_term(
            tr.model,
            tr.schedule,
            x0,
            k,
            noise,
            variance=tr.cfg.variance,
            decoder="discretized",
            levels=tr.levels,
            model_dtype=torch.float32,
        )
        s = tr.schedule
        xt = s.alpha_bars[k].sqrt()[:, None] * x0 + s.one_minus_alpha_bars[k].sqrt()[:, None] * noise
        out = tr.model(xt.float(), k)
        eps = out[0] if isinstance(out, tuple) else out
        simple = simple_term(noise, eps.to(F64))
    return L, simple


@pytest.mark.parametrize("loss", ["simple", "vlb", "hybrid"])
@pytest.mark.parametrize("param", ["eps", "categorical"])
def test_loss_value_is_the_engine_terms(data_file, tmp_path, loss, param):
    tr = _trainer(data_file, tmp_path, loss=loss, param=param)
    x0, k, w, noise = _replay(tr)
    assert float(w.std()) > 0.05  # the weights really differ from 1
    L, simple = _engine_terms(tr, x0, k, noise)
    D = x0[0].numel()
    bpd = 1.0 / (D * math.log(2.0))
    T, lam = tr.cfg.T, tr.cfg.hybrid_lambda
    expected = {
        "simple": (w * simple).mean(),
        "vlb": (w * T * L * bpd).mean(),
        "hybrid": (w * (simple + lam * T * L * bpd)).mean(),
    }[loss]
    got = tr.step()
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # the alternatives a seeded bug would compute are far away (so the check above can fail)
    if loss == "vlb":
        assert abs(float((T * L * bpd).mean()) - float(expected)) > 1e-3 * abs(float(expected))
    if loss == "hybrid":
        assert abs(float((w * (simple + lam * L * bpd)).mean()) - float(expected)) > 1e-3 * abs(float(expected))


@pytest.mark.parametrize("loss", ["simple", "vlb", "hybrid"])
def test_loss_gradient_flows_where_it_should(data_file, tmp_path, loss):
    tr = _trainer(data_file, tmp_path, loss=loss)
    x0, k, w, noise = _replay(tr)
    rec = _Recorder(tr.model)
    tr.model = rec
    tr.step()
    eps, v = rec.eps, rec.v
    B, D = x0.shape[0], x0[0].numel()
    W = w.reshape(B, *([1] * (x0.ndim - 1)))
    grad_simple = (-2.0 * W * (noise - eps.detach().to(F64)) / (D * B)).float()

    # ∂/∂v of the bound part, computed independently on a fresh leaf v (the ε̂ of this step held fixed)
    v_leaf = v.detach().clone().requires_grad_(True)
    L = bound_term(
        lambda xt, kk: (eps.detach(), v_leaf),
        tr.schedule,
        x0,
        k,
        noise,
        variance="learned",
        decoder="discretized",
        levels=tr.levels,
        model_dtype=torch.float32,
    )
    bpd = 1.0 / (D * math.log(2.0))
    (dL_dv,) = torch.autograd.grad((w * tr.cfg.T * L * bpd).mean(), v_leaf)
    dL_dv = dL_dv.to(F64)

    if loss == "simple":
        torch.testing.assert_close(eps.grad, grad_simple, rtol=1e-5, atol=1e-9)
        assert v.grad is None or float(v.grad.abs().max()) == 0.0
    elif loss == "hybrid":
        # the vlb part trains only v: ∂loss/∂ε̂ is the simple part's gradient exactly
        torch.testing.assert_close(eps.grad, grad_simple, rtol=1e-5, atol=1e-9)
        torch.testing.assert_close(v.grad.to(F64), tr.cfg.hybrid_lambda * dL_dv, rtol=1e-4, atol=1e-9)
    else:  # vlb: both outputs are trained by the bound; the ε̂ gradient is not the simple loss's
        torch.testing.assert_close(v.grad.to(F64), dL_dv, rtol=1e-4, atol=1e-9)
        assert float((eps.grad - grad_simple).abs().max()) > 1e-6
        assert float(eps.grad.abs().max()) > 0
