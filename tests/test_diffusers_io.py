"""diffusers models scored by the engine (elbo_lab/diffusers_io.py): betas in float64, x̂_0 / v → ε conversions,
variance conventions, clip_sample, and `elbo-lab bound --diffusers DIR` against a direct variational_bound call.

The conversions are checked against formulas written here from the definitions (x_t = √ᾱ x_0 + √(1−ᾱ) ε,
v = √ᾱ ε − √(1−ᾱ) x_0), a SymPy identity, and diffusers' own ``add_noise``/``get_velocity``/``step``/``_get_variance``.
diffusers is an optional extra: without it these tests skip, except where ELBO_LAB_REQUIRE_OPTIONAL=1 (set in
.ci/run), where a missing diffusers fails them.
"""

from __future__ import annotations

import json
import os

import pytest
import sympy as sp
import torch

from elbo_lab import diffusion as D
from elbo_lab.bound import variational_bound
from elbo_lab.cli import main as cli
from elbo_lab.data import load_digits
from elbo_lab.schedule import NoiseSchedule

if os.environ.get("ELBO_LAB_REQUIRE_OPTIONAL") == "1":
    import diffusers  # noqa: F401  (CI installs the extra: a missing one is a failure, not a skip)
else:
    pytest.importorskip("diffusers")

from diffusers import DDPMScheduler, UNet2DModel  # noqa: E402

from elbo_lab.bound import _to_eps  # noqa: E402  (the engine's output → ε̂ conversion, which ModelSpec selects)
from elbo_lab.diffusers_io import (
    ENGINE_PREDICTION,
    VARIANCES,
    DiffusersEps,
    eps_from_v,
    load_diffusers,
    schedule_from_config,
)  # noqa: E402

F64 = torch.float64
T = 20


def tiny_unet(channels: int = 1, side: int = 8, learned: bool = False, seed: int = 0) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=side,
        in_channels=channels,
        out_channels=2 * channels if learned else channels,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    )


def scheduler(**kw) -> DDPMScheduler:
    kw = {"num_train_timesteps": T, "beta_schedule": "linear", "beta_start": 1e-3, "beta_end": 0.2, **kw}
    return DDPMScheduler(**kw)


# -- betas ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_betas_float64_match_diffusers(kind):
    sch = scheduler(beta_schedule=kind, num_train_timesteps=200, beta_start=1e-4, beta_end=0.02)
    s = schedule_from_config(dict(sch.config))
    assert s.betas.dtype == F64 and s.T == 200
    # diffusers keeps float32: agreement to float32 rounding, and the float64 values are not the float32 ones
    torch.testing.assert_close(s.betas, sch.betas.to(F64), rtol=2e-6, atol=0)
    assert float((s.betas - sch.betas.to(F64)).abs().max()) > 0


def test_trained_betas_and_unsupported_schedules():
    b = torch.linspace(1e-3, 0.3, 7, dtype=F64)
    s = schedule_from_config(dict(scheduler(trained_betas=b.tolist(), num_train_timesteps=7).config))
    assert torch.equal(s.betas, b)
    from elbo_lab.errors import ElboLabError

    with pytest.raises(ElboLabError, match="laplace"):
        schedule_from_config({"beta_schedule": "laplace", "num_train_timesteps": 10})
    with pytest.raises(ElboLabError, match="zero_snr"):
        schedule_from_config(dict(scheduler(rescale_betas_zero_snr=True).config))


# -- conversions ------------------------------------------------------------------------------------------------------


def test_eps_from_v_sympy_identity_and_against_definition():
    a, x0, e = sp.symbols("alpha_bar x_0 epsilon", positive=True)
    xt = sp.sqrt(a) * x0 + sp.sqrt(1 - a) * e
    v = sp.sqrt(a) * e - sp.sqrt(1 - a) * x0
    assert sp.simplify(sp.sqrt(a) * v + sp.sqrt(1 - a) * xt - e) == 0  # the identity eps_from_v implements

    s = NoiseSchedule.cosine(50)
    g = torch.Generator().manual_seed(0)
    x0t, eps = torch.rand(6, 3, 4, 4, generator=g, dtype=F64) * 2 - 1, torch.randn(6, 3, 4, 4, generator=g, dtype=F64)
    k = torch.tensor([0, 1, 10, 25, 48, 49])
    ab = s.alpha_bars[k].reshape(-1, 1, 1, 1)
    xt_n = ab.sqrt() * x0t + (1 - ab).sqrt() * eps
    v_n = ab.sqrt() * eps - (1 - ab).sqrt() * x0t
    torch.testing.assert_close(eps_from_v(s, xt_n, k, v_n), eps, rtol=0, atol=1e-13)
    # diffusers' own velocity (float32 alphas_cumprod) agrees to float32 precision
    sch = DDPMScheduler(num_train_timesteps=50, beta_schedule="squaredcos_cap_v2")
    v_d = sch.get_velocity(x0t, eps, k)
    torch.testing.assert_close(eps_from_v(s, xt_n, k, v_d), eps, rtol=0, atol=1e-6)


class Oracle(torch.nn.Module):
    """A network whose output is the true target for known (x_0, ε): ε, x_0 or v (the conversions must recover ε)."""

    def __init__(self, x0, eps, schedule, target):
        super().__init__()
        self.x0, self.eps, self.s, self.target = x0, eps, schedule, target
        self.w = torch.nn.Parameter(torch.zeros((), dtype=F64))  # a parameter so the wrapper can read the dtype

    def forward(self, xt, k, return_dict=False):
        ab = self.s.alpha_bars[k].reshape(-1, 1, 1, 1)
        out = {"epsilon": self.eps, "sample": self.x0, "v_prediction": ab.sqrt() * self.eps - (1 - ab).sqrt() * self.x0}
        return (out[self.target] + self.w,)


@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
def test_wrapper_recovers_eps_for_every_prediction_type(ptype):
    s = NoiseSchedule.linear(T, 1e-3, 0.2)
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.rand(T, 2, 4, 4, generator=g, dtype=F64) * 2 - 1, torch.randn(T, 2, 4, 4, generator=g, dtype=F64)
    k = torch.arange(T)
    xt = D.q_sample(s, x0, k, eps)
    out = DiffusersEps(Oracle(x0, eps, s, ptype), s, ptype, learned=False, clip=None)(xt, k)
    # sample: ε = (x_t − √ᾱ x_0)/√(1−ᾱ) divides by √(1−ᾱ_1) ≈ 0.03: rounding of x_t is amplified ~30×
    torch.testing.assert_close(out, eps, rtol=0, atol=1e-12 if ptype == "sample" else 1e-14)


def _diffusers_mean_var(sch, model_output, xt, k):
    """diffusers' posterior mean (step's prev_sample minus its own noise, regenerated from the same seed) and σ²."""
    prev = sch.step(model_output, k, xt, generator=torch.Generator().manual_seed(123)).prev_sample
    C = xt.shape[1]
    pv = model_output[:, C:] if model_output.shape[1] == 2 * C else None
    var = sch._get_variance(k, predicted_variance=pv)
    if sch.config.variance_type == "learned_range":
        var = torch.exp(var)  # _get_variance returns log σ² for learned_range
    z = torch.randn(xt.shape, generator=torch.Generator().manual_seed(123), dtype=xt.dtype)  # step's randn_tensor
    return prev - var.sqrt() * z, var


@pytest.mark.parametrize("clip", [False, True])
@pytest.mark.parametrize("vtype", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("ptype", ["epsilon", "sample", "v_prediction"])
def test_reverse_step_matches_diffusers_step(ptype, vtype, clip):
    """The engine's μ_θ(x_t, ε̂) and σ_t² from the wrapped model equal diffusers' DDPMScheduler.step for t ≥ 2."""
    sch = scheduler(prediction_type=ptype, variance_type=vtype, clip_sample=clip)
    s = schedule_from_config(dict(sch.config))
    learned = vtype == "learned_range"
    C = 2
    g = torch.Generator().manual_seed(2)
    raw = torch.randn(1, 2 * C if learned else C, 4, 4, generator=g, dtype=F64) * 1.5  # x̂_0 often outside [−1, 1]
    if learned:
        raw[:, C:] = torch.rand(1, C, 4, 4, generator=g, dtype=F64) * 2 - 1

    class Fixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros((), dtype=F64))

        def forward(self, xt, k, return_dict=False):
            return (raw.expand(xt.shape[0], -1, -1, -1) + self.w,)

    assert (VARIANCES[vtype] == "learned") == learned
    model = DiffusersEps(Fixed(), s, ptype, learned=learned, clip=1.0 if clip else None)  # the wrapper converts
    raw_model = DiffusersEps(Fixed(), s, ptype, learned=learned, clip=None, convert=False)  # the engine converts
    pred = ENGINE_PREDICTION[ptype]
    for k in (1, 5, T - 1):
        xt = torch.randn(1, C, 4, 4, generator=g, dtype=F64)
        kk = torch.tensor([k])
        out = model(xt, kk)
        eps, v = out if learned else (out, None)
        mu = D.reverse_mean(s, xt, kk, eps)
        out_raw = raw_model(xt, kk)
        eps_engine = _to_eps(s, xt, kk, out_raw[0] if learned else out_raw, pred, clip)  # what ModelSpec makes
        torch.testing.assert_close(D.reverse_mean(s, xt, kk, eps_engine), mu, rtol=0, atol=1e-12)
        var = D.reverse_variance_from_v(s, kk, v) if learned else D.reverse_variance(s, kk, VARIANCES[vtype])
        mu_d, var_d = _diffusers_mean_var(sch, raw.float(), xt.float(), k)
        torch.testing.assert_close(mu.float(), mu_d, rtol=1e-4, atol=1e-5)
        var, var_d = torch.broadcast_tensors(var.float().reshape(-1, *([1] * (var_d.ndim - 1))) if var.ndim == 1
                                              else var.float(), var_d)  # fmt: skip
        torch.testing.assert_close(var, var_d, rtol=1e-4, atol=0)


# -- loading and the CLI ---------------------------------------------------------------------------------------------


def save(tmp_path, unet, sch, pipeline=False):
    d = tmp_path / "model"
    if pipeline:
        unet.save_pretrained(d / "unet")
        sch.save_pretrained(d / "scheduler")
    else:
        unet.save_pretrained(d)
        sch.save_pretrained(d)
    return d


def test_load_reads_settings_and_refuses_unsupported(tmp_path):
    d = save(
        tmp_path, tiny_unet(learned=True), scheduler(prediction_type="v_prediction", variance_type="learned_range")
    )
    m = load_diffusers(d)
    assert (m.prediction_type, m.variance, m.clip, m.shape) == ("v_prediction", "learned", 1.0, (1, 8, 8))
    spec = m.spec(17)
    assert (spec.variance, spec.prediction, spec.clip_denoised, spec.levels) == ("learned", "v", True, 17)
    assert not m.eps_model.convert  # the engine converts v̂ and clips
    r2 = save(tmp_path / "r2", tiny_unet(), scheduler(prediction_type="sample", clip_sample_range=2.0))
    m2 = load_diffusers(r2)
    spec2 = m2.spec(17)
    assert (m2.clip, m2.eps_model.convert, spec2.prediction, spec2.clip_denoised) == (2.0, True, "epsilon", False)
    assert "clipped to [-2, 2]" in spec2.source
    from elbo_lab.errors import ElboLabError

    bad = save(tmp_path / "b", tiny_unet(), scheduler(variance_type="learned_range"))  # needs 2C outputs
    with pytest.raises(ElboLabError, match="output channels"):
        load_diffusers(bad)
    with pytest.raises(ElboLabError, match="expected unet/config.json"):
        load_diffusers(tmp_path)


@pytest.mark.parametrize(
    "ptype,vtype,pipeline,clip",
    [
        ("epsilon", "fixed_small", False, False),
        ("v_prediction", "learned_range", True, False),
        ("sample", "fixed_large", False, True),
    ],
)
def test_cli_bound_equals_direct_variational_bound(tmp_path, capsys, ptype, vtype, pipeline, clip):
    """`elbo-lab bound --diffusers DIR` = variational_bound on the same U-Net, wrapped here from the definitions."""
    learned = vtype == "learned_range"
    unet = tiny_unet(learned=learned)
    sch = scheduler(prediction_type=ptype, variance_type=vtype, clip_sample=clip)
    d = save(tmp_path, unet, sch, pipeline)
    out = tmp_path / "b.json"
    assert cli(["bound", "--diffusers", str(d), "--data", "digits", "--n", "3", "--estimator", "full",
                "--device", "cpu", "--json", str(out)]) == 0  # fmt: skip
    got = json.loads(out.read_text())
    printed = capsys.readouterr().out
    assert f"prediction_type={ptype}" in printed and f"variance_type={vtype}" in printed

    s = NoiseSchedule.linear(T, 1e-3, 0.2)  # the scheduler's betas, built independently in float64

    def direct(xt, k):
        o = unet(xt.float(), k).sample.double()
        raw, fv = (o[:, :1], (o[:, 1:] + 1) / 2) if learned else (o, None)
        ab = s.alpha_bars[k].reshape(-1, 1, 1, 1)
        if ptype == "v_prediction":
            raw = ab.sqrt() * raw + (1 - ab).sqrt() * xt  # ε = √ᾱ v + √(1−ᾱ) x_t
        if ptype == "sample":  # x̂_0, clipped like DDPMScheduler.step, then ε = (x_t − √ᾱ x̂_0)/√(1−ᾱ)
            raw = (xt - ab.sqrt() * raw.clamp(-1, 1)) / (1 - ab).sqrt()
        return (raw, fv) if learned else raw

    x = load_digits().test[:3].to(F64)
    with torch.no_grad():
        res = variational_bound(
            direct, s, x, estimator="full", variance={"learned_range": "learned", "fixed_small": "posterior",
            "fixed_large": "beta"}[vtype], levels=17,
            generator=0, model_dtype=F64, bits_per_dim=True,
        )  # fmt: skip
    assert got["n_images"] == 3 and got["n_evals"] == 2 * 3 * T  # full: 2 ε draws per step
    assert got["config"]["diffusers"]["prediction_type"] == ptype
    assert got["model"]["prediction"] == ENGINE_PREDICTION[ptype] and got["model"]["clip_denoised"] == clip
    assert abs(got["total"] - res.mean()) < 1e-9
    torch.testing.assert_close(torch.tensor(got["terms"], dtype=F64), res.terms.mean(0), rtol=0, atol=1e-9)


def test_cli_diffusers_bad_input_exits_2(tmp_path, capsys):
    d = save(tmp_path, tiny_unet(), scheduler())
    assert cli(["bound", "--diffusers", str(d)]) == 2  # no --data
    assert cli(["bound", "--diffusers", str(tmp_path / "nope"), "--data", "digits"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("elbo-lab: error:") for line in err)
