"""DDPM on real digits with tiny models: networks, the categorical head, the training sampler, the three routes to
the bound on a trained checkpoint, trained beats untrained, exact resume, CLI (bad input, sample, bound --json).

Routes to the bound (guide "ELBO of diffusion models"; all through the engine's functions):
(1) closed-form Gaussian KLs (``form="kl"``), (2) the ε-weighted form w_t‖ε − ε̂‖² + C (``form="eps"``): equal
per image at shared noise; (3) trajectory Monte Carlo, log q(x_{1:T}|x_0) − log p_θ(x_{0:T}) on trajectories
drawn from q (x_T from :func:`q_marginal`, then x_{t−1} from :func:`q_posterior`): within 4 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from elbo_lab import diffusion as D
from elbo_lab.bound import simple_term, trajectory_bound, variational_bound
from elbo_lab.cli import main as cli
from elbo_lab.data import load_digits
from elbo_lab.ddpm import TrainConfig, load_checkpoint, load_model, train
from elbo_lab.ddpm.model import EpsModel, build_eps_model, make_net_config
from elbo_lab.ddpm.sampler import ImportanceSampler, UniformSampler
from elbo_lab.nets import MLPConfig, MLPEps, UNetConfig, UNetEps
from elbo_lab.schedule import NoiseSchedule
from elbo_lab.symbolic import reference

F64 = torch.float64
TINY = dict(
    T=20,
    base_channels=8,
    batch_size=32,
    eval_every=40,
    log_every=10,
    val_samples=4,
    device="cpu",
    lr=2e-3,
    ema_decay=0.9,
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny U-Net (learned variance, categorical head, hybrid loss) trained for 120 steps on digits, T = 20."""
    out = tmp_path_factory.mktemp("ddpm")
    train(TrainConfig(steps=120, **TINY), out, progress=False, log=lambda *a: None)
    return out


@pytest.fixture(scope="module")
def test_images():
    return load_digits().test[:24].to(F64)


# -- engine additions and networks ---------------------------------------------------------------------------------


def test_predict_eps_vs_sympy_and_inverts_q_sample():
    s = NoiseSchedule.cosine(50)
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 5, generator=g, dtype=F64), torch.randn(6, 5, generator=g, dtype=F64)
    k = torch.tensor([0, 3, 10, 20, 40, 49])
    xt = D.q_sample(s, x0, k, eps)
    got = D.predict_eps(s, xt, k, x0)
    ab = s.alpha_bars[k].numpy()[:, None]
    ref = reference("forward_marginal", "eps_from_xt", xt=xt.numpy(), x0=x0.numpy(), alpha_bar=ab)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(got.numpy(), eps.numpy(), rtol=1e-9, atol=1e-9)


def test_simple_term_vs_sympy():
    g = torch.Generator().manual_seed(1)
    eps, eps_hat = torch.randn(4, 3, 2, generator=g, dtype=F64), torch.randn(4, 3, 2, generator=g, dtype=F64)
    ref = reference("simple_loss", "simple_term", eps=eps.numpy(), eps_hat=eps_hat.numpy()).reshape(4, -1).mean(1)
    np.testing.assert_allclose(simple_term(eps, eps_hat).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize(("c", "side", "mults"), [(1, 8, (1, 2)), (1, 16, (1, 2, 2)), (3, 32, (1, 2, 2, 2))])
@pytest.mark.parametrize("learned", [False, True])
def test_unet_shapes(c, side, mults, learned):
    net = UNetEps(
        UNetConfig(
            in_channels=c,
            image_size=side,
            base_channels=8,
            channel_mults=mults,
            attention_res=(side // 2,),
            learned_variance=learned,
        )
    )
    x, k = torch.randn(2, c, side, side), torch.tensor([0, 999])
    out = net(x, k)
    if learned:
        eps, v = out
        assert eps.shape == v.shape == x.shape
        assert torch.allclose(v, torch.full_like(v, 0.5))  # zero-initialised output: v = (0 + 1)/2
    else:
        assert out.shape == x.shape
    with pytest.raises(ValueError, match="expected x_t of shape"):
        net(torch.randn(2, c + 1, side, side), k)


def test_mlp_shapes_and_bad_input():
    net = MLPEps(MLPConfig(dim=5, hidden=16, learned_variance=True, out_per_channel=3))
    eps, v = net(torch.randn(4, 5), torch.arange(4))
    assert eps.shape == (4, 15) and v.shape == (4, 5)
    with pytest.raises(ValueError, match="expected x_t of shape"):
        net(torch.randn(4, 6), torch.arange(4))
    with pytest.raises(ValueError, match="not divisible"):
        UNetEps(UNetConfig(image_size=6, channel_mults=(1, 2, 2)))


def test_categorical_head_is_the_bayes_denoiser_at_zero_logits():
    """Fresh network (zero-initialised output → logits 0): ε̂ must be the noise implied by the posterior mean of
    x_0 under i.i.d. uniform levels, computed here independently with numpy + the lambdified E5 results."""
    K, s = 5, NoiseSchedule.cosine(30)
    cfg = make_net_config((1, 4, 4), T=30, learned_variance=False, out_per_channel=K, base_channels=8)
    model = build_eps_model(cfg, s, param="categorical", levels=K, device="cpu")
    g = torch.Generator().manual_seed(2)
    xt, k = 1.5 * torch.randn(3, 1, 4, 4, generator=g, dtype=F64), torch.tensor([0, 12, 29])
    with torch.no_grad():
        got = model(xt, k).numpy()
    grid = np.linspace(-1, 1, K)
    ab = s.alpha_bars[k].numpy().reshape(3, 1, 1, 1, 1)
    mean = reference("forward_marginal", "mean", x0=grid.reshape(1, 1, 1, 1, K), alpha_bar=ab)
    var = reference("forward_marginal", "variance", alpha_bar=ab)
    logw = -((xt.numpy()[..., None] - mean) ** 2) / (2 * var)
    w = np.exp(logw - logw.max(-1, keepdims=True))
    x0_hat = (w * grid).sum(-1) / w.sum(-1)
    ref = reference("forward_marginal", "eps_from_xt", xt=xt.numpy(), x0=x0_hat, alpha_bar=ab[..., 0])
    np.testing.assert_allclose(got, ref, rtol=1e-8, atol=1e-8)


def test_categorical_head_snaps_to_the_grid_at_low_noise():
    """At k = 0 a grid point plus forward noise is recognised exactly: ε̂ = ε to high accuracy."""
    K, s = 17, NoiseSchedule.cosine(1000)
    cfg = make_net_config((1, 8, 8), T=1000, learned_variance=False, out_per_channel=K, base_channels=8)
    model = build_eps_model(cfg, s, param="categorical", levels=K, device="cpu")
    x0 = load_digits().test[:4].to(F64)
    g = torch.Generator().manual_seed(3)
    eps = torch.randn(x0.shape, generator=g, dtype=F64)
    k = torch.zeros(4, dtype=torch.long)
    with torch.no_grad():
        eps_hat = model(D.q_sample(s, x0, k, eps), k)
    assert float((eps_hat - eps).abs().max()) < 1e-6


def test_eps_model_rejects_bad_parameterization():
    net = UNetEps(UNetConfig(base_channels=8, channel_mults=(1,), attention_res=()))
    with pytest.raises(ValueError, match="parameterization"):
        EpsModel(net, NoiseSchedule.cosine(10), param="x0")
    with pytest.raises(ValueError, match="levels"):
        EpsModel(net, NoiseSchedule.cosine(10), param="categorical")


# -- training timestep sampler -------------------------------------------------------------------------------------


def test_importance_sampler_weights_unbiased_and_warm_up():
    T = 8
    sm = ImportanceSampler(T, history=3, mix=0.1)
    g = torch.Generator().manual_seed(0)
    assert torch.allclose(sm.probs(), torch.full((T,), 1 / T, dtype=F64))  # uniform during warm-up
    losses = torch.linspace(0.1, 5.0, T, dtype=F64) ** 2
    for _ in range(3):
        sm.update(torch.arange(T), losses)
    assert sm.warmed_up
    p = sm.probs()
    expected = 0.9 * losses / losses.sum() + 0.1 / T  # √mean(L²) = L for a constant history
    torch.testing.assert_close(p, expected)
    # E_{k~p}[ℓ_k/(T p_k)] = mean ℓ exactly, and the drawn weights are 1/(T p_k)
    ell = torch.randn(T, generator=g, dtype=F64)
    torch.testing.assert_close((p * ell / (T * p)).sum(), ell.mean())
    k, w = sm.sample(1000, g)
    torch.testing.assert_close(w, 1 / (T * p[k]))
    assert np.corrcoef(np.bincount(k.numpy(), minlength=T), p.numpy())[0, 1] > 0.95
    state = sm.state_dict()
    sm2 = ImportanceSampler(T, history=3, mix=0.1)
    sm2.load_state_dict(state)
    torch.testing.assert_close(sm2.probs(), p)
    k, w = UniformSampler(T).sample(16, g)
    assert w.eq(1).all() and k.min() >= 0 and k.max() < T


# -- the trained checkpoint ----------------------------------------------------------------------------------------


def test_checkpoints_load_weights_only_and_record_device(trained):
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(trained / name, weights_only=True)
        assert ckpt["format"] == "elbo-lab-ddpm" and ckpt["device"].startswith("cpu")
    import json

    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["device"].startswith("cpu") and metrics["step"] == 120
    assert any("heldout_bpd" in r for r in metrics["history"]) and any("train_simple" in r for r in metrics["history"])


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_routes_kl_equals_eps_form_on_trained_model(trained, test_images, variance):
    model, _ = load_model(trained)
    kw = dict(variance=variance, levels=17, generator=7, model_dtype=F64)
    kl = variational_bound(model, model.schedule, test_images, form="kl", **kw)
    eps = variational_bound(model, model.schedule, test_images, form="eps", **kw)
    np.testing.assert_allclose(kl.terms.numpy(), eps.terms.numpy(), rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(kl.total.numpy(), eps.total.numpy(), rtol=1e-10)


@pytest.mark.parametrize("variance", ["learned", "posterior"])
def test_routes_trajectory_monte_carlo_matches_bound(trained, test_images, variance):
    model, _ = load_model(trained)
    x = test_images[3:4].repeat(600, 1, 1, 1)
    nll = trajectory_bound(model, model.schedule, x, variance=variance, levels=17, generator=11, model_dtype=F64)
    mc, mc_se = nll.mean().item(), nll.std().item() / math.sqrt(len(nll))
    full = variational_bound(
        model, model.schedule, x[:600], variance=variance, levels=17, generator=12, model_dtype=F64, chunk_size=4000
    )
    se = math.hypot(mc_se, full.mean_stderr())
    assert abs(mc - full.mean()) < 4 * se, (mc, full.mean(), se)
    assert se < 0.05 * abs(full.mean())  # the check has teeth: error bars are a few percent of the value


def test_trained_beats_untrained(trained, test_images):
    model, ckpt = load_model(trained)
    fresh = build_eps_model(ckpt["net_config"], model.schedule, param="categorical", levels=17, device="cpu").eval()
    kw = dict(variance="learned", levels=17, generator=5, model_dtype=F64, bits_per_dim=True)
    a = variational_bound(model, model.schedule, test_images, **kw)
    b = variational_bound(fresh, model.schedule, test_images, **kw)
    diff = b.total - a.total  # paired (same noise), bits/dim
    se = diff.std().item() / math.sqrt(len(diff))
    assert diff.mean().item() > 0.3 and diff.mean().item() > 6 * se, (a.mean(), b.mean(), se)


def test_resume_reproduces_identical_weights(tmp_path):
    cfg = dict(TINY, eval_every=3, batch_size=16)
    train(TrainConfig(steps=8, **cfg), tmp_path / "full", progress=False, log=lambda *a: None)
    train(TrainConfig(steps=4, **cfg), tmp_path / "half", progress=False, log=lambda *a: None)
    train(TrainConfig(steps=8, **cfg), tmp_path / "half", resume=True, progress=False, log=lambda *a: None)
    a, b = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "half" / "last.pt")
    assert a["step"] == b["step"] == 8
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), (key, name)
    for i, st in a["optimizer"]["state"].items():
        assert torch.equal(st["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
    # a different run (seed) does differ, so the comparison above can fail
    train(TrainConfig(steps=4, **dict(cfg, seed=1)), tmp_path / "other", progress=False, log=lambda *a: None)
    c = load_checkpoint(tmp_path / "other" / "last.pt")
    assert not all(torch.equal(t, c["model"][n]) for n, t in a["model"].items())


def test_resume_with_other_options_is_refused(tmp_path):
    cfg = dict(TINY, eval_every=2, batch_size=8)
    train(TrainConfig(steps=2, **cfg), tmp_path, progress=False, log=lambda *a: None)
    with pytest.raises(Exception, match="cannot resume.*loss"):
        train(TrainConfig(steps=4, **dict(cfg, loss="vlb")), tmp_path, resume=True, progress=False)


def test_vector_data_trains_with_the_mlp(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "v.npy", rng.integers(0, 5, size=(60, 6)))
    cfg = dict(TINY, eval_every=3, batch_size=8, levels=5, data=str(tmp_path / "v.npy"))
    s = train(TrainConfig(steps=3, **cfg), tmp_path / "run", progress=False, log=lambda *a: None)
    assert s["net_config"]["kind"] == "mlp" and math.isfinite(s["best"]["heldout_bpd"])


# -- CLI -----------------------------------------------------------------------------------------------------------


def _one_line_error(capsys, argv) -> str:
    rc = cli(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert err.startswith("elbo-lab: error:") and len(err.splitlines()) == 1, err
    return err


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, trained):
    base = ["train", "ddpm", "--steps", "1", "--out", str(tmp_path / "r"), "--no-progress"]
    if not torch.cuda.is_available():
        assert "CUDA is not available" in _one_line_error(capsys, [*base, "--device", "cuda"])
    assert "unknown device" in _one_line_error(capsys, [*base, "--device", "tpu"])
    np.save(tmp_path / "odd.npy", np.arange(20 * 6 * 8).reshape(20, 6, 8) % 4)
    assert "square" in _one_line_error(capsys, [*base, "--data", str(tmp_path / "odd.npy"), "--device", "cpu"])
    np.save(tmp_path / "range.npy", np.full((20, 8, 8), 3.5))
    assert "expected integer levels" in _one_line_error(capsys, [*base, "--data", str(tmp_path / "range.npy")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in _one_line_error(capsys, ["bound", str(tmp_path / "junk.pt")])
    torch.save({"format": "something-else"}, tmp_path / "foreign.pt")
    assert "not an elbo-lab DDPM" in _one_line_error(capsys, ["sample", str(tmp_path / "foreign.pt")])
    np.save(tmp_path / "big.npy", np.zeros((20, 16, 16), dtype=np.int64) + np.arange(16)[None, None])
    err = _one_line_error(capsys, ["bound", str(trained / "best.pt"), "--data", str(tmp_path / "big.npy")])
    assert "trained on shape" in err
    assert "no checkpoint" in _one_line_error(capsys, [*base, "--resume"])
    with pytest.raises(SystemExit) as e:  # argparse: unknown option -> usage + error, status 2
        cli([*base, "--bogus"])
    assert e.value.code == 2


def test_cli_sample_writes_png(trained, tmp_path, capsys):
    out = tmp_path / "s.png"
    assert cli(["sample", str(trained), "--n", "4", "--out", str(out), "--device", "cpu", "--no-progress"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out).ndim == 3
    assert "device: cpu" in capsys.readouterr().out


def test_cli_bound_json(trained, tmp_path, capsys):
    import json

    out = tmp_path / "b.json"
    argv = ["bound", str(trained), "--estimator", "full", "--n", "6", "--device", "cpu", "--json", str(out)]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    r = json.loads(out.read_text())
    assert r["device"].startswith("cpu") and r["units"] == "bits/dim" and r["n_images"] == 6
    assert r["n_evals"] == 2 * 6 * 20 and len(r["terms"]) == 20 and r["estimator"] == "full"  # 2 ε draws
    assert r["total"] == pytest.approx(r["prior_L_T"] + sum(r["terms"]), rel=1e-9)
    assert r["decoder_L_0"] == r["terms"][0] and r["stderr_estimator"] > 0  # full reports its ε noise
    assert 0 < r["per_pixel_baseline"] < math.log2(17)
    assert f"{r['total']:.5f}" in printed and "L_0 (t = 1)" in printed
    argv = ["bound", str(trained), "--estimator", "importance", "--budget", "8", "--n", "6", "--json", str(out)]
    assert cli([*argv, "--device", "cpu"]) == 0
    r = json.loads(out.read_text())
    assert r["num_samples"] == 8 and r["stderr_estimator"] > 0 and r["n_pilot_evals"] > 0
    assert r["n_evals"] >= 6 * 8 + r["n_pilot_evals"]


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_kill_leaves_last_checkpoint_intact(tmp_path, sig):
    """A run killed (or interrupted) at an arbitrary moment leaves a loadable last.pt that resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    argv = [
        sys.executable,
        "-m",
        "elbo_lab.cli",
        "train",
        "ddpm",
        "--steps",
        "100000",
        "--T",
        "20",
        "--base-channels",
        "8",
        "--batch-size",
        "8",
        "--eval-every",
        "2",
        "--val-samples",
        "2",
        "--device",
        "cpu",
        "--out",
        str(out),
        "--no-progress",
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    import json

    def step_on_disk() -> int:
        try:
            return json.loads((out / "metrics.json").read_text())["step"]
        except (OSError, ValueError, KeyError):
            return -1

    deadline = time.time() + 120
    while step_on_disk() < 4 and time.time() < deadline:  # a few checkpoints written, more being written
        time.sleep(0.1)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=60)
    if sig == "SIGINT":
        assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["step"] >= 4
    assert not [p for p in out.iterdir() if p.name.startswith(".")] or sig == "SIGKILL"  # no temp files on SIGINT
    s = train(
        TrainConfig(**ckpt["config"] | {"steps": ckpt["step"] + 2, "minutes": None}),
        out,
        resume=True,
        progress=False,
        log=lambda *a: None,
    )
    assert s["step"] == ckpt["step"] + 2
