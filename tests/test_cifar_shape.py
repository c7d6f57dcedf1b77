"""CIFAR-10's format end to end: a (N, 3, 32, 32) uint8 file with 256 levels trains (a few steps), is bounded and
sampled from the CLI.  The data are i.i.d. uniform pixels, whose entropy is exactly log2(256) = 8 bits/dim, so any
model's expected NLL -- and so its bound -- is at least 8 bits/dim on fresh images: a bound below 8 (beyond its
standard error) would be a wrong bound (a lost term, a wrong D or a wrong number of levels).
"""

from __future__ import annotations

import json
import math

import matplotlib.image as mpimg
import numpy as np
import pytest

from elbo_lab.cli import main as cli


@pytest.fixture(scope="module")
def cifar_like(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    x = np.random.default_rng(0).integers(0, 256, size=(24, 3, 32, 32), dtype=np.uint8)
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0, 255  # both ends of the range present (levels inferred as 256)
    np.save(d / "c.npy", x)
    out = d / "run"
    argv = ["train", "ddpm", "--data", str(d / "c.npy"), "--steps", "2", "--batch-size", "4", "--T", "10",
            "--base-channels", "8", "--eval-every", "2", "--val-samples", "2", "--device", "cpu",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert cli(argv) == 0
    return d, out


def test_cifar_shape_trains_bounds_and_samples(cifar_like, tmp_path, capsys):
    d, run = cifar_like
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["shape"] == [3, 32, 32] and metrics["data"]["levels"] == 256
    assert metrics["net_config"]["in_channels"] == 3 and metrics["net_config"]["image_size"] == 32
    assert metrics["step"] == 2

    js = tmp_path / "b.json"
    assert cli(["bound", str(run), "--estimator", "full", "--n", "4", "--device", "cpu", "--json", str(js)]) == 0
    b = json.loads(js.read_text())
    assert (b["n_images"], b["dim"], b["levels"], b["n_evals"]) == (4, 3 * 32 * 32, 256, 2 * 4 * 10)  # 2 ε draws
    assert math.isfinite(b["total"]) and b["stderr_images"] > 0
    assert b["total"] + 4 * b["stderr_images"] >= 8.0  # ≥ the data entropy, 8 bits/dim
    assert b["total"] == pytest.approx(b["prior_L_T"] + sum(b["terms"]), abs=1e-9)
    assert b["per_pixel_baseline"] > 7.5  # the fitted per-pixel categorical on 20 uniform images

    png = tmp_path / "s.png"
    assert cli(["sample", str(run), "--n", "4", "--out", str(png), "--device", "cpu", "--no-progress"]) == 0
    img = mpimg.imread(png)
    assert img.ndim == 3 and img.shape[2] in (3, 4)  # an RGB(A) grid
    rgb = img[..., :3]
    assert float(np.abs(rgb[..., 0] - rgb[..., 1]).max()) > 0.1  # colour, not three equal grey channels
    capsys.readouterr()


def test_evaluation_micro_batches_change_no_value(monkeypatch):
    """EpsModel evaluates big categorical heads in micro-batches (memory); the values equal one whole batch's."""
    import torch

    from elbo_lab.ddpm import model as M

    s = M.make_schedule("cosine", 10)
    cfg = M.make_net_config((3, 8, 8), T=10, learned_variance=True, out_per_channel=256, base_channels=8)
    m = M.build_eps_model(cfg, s, param="categorical", levels=256, device="cpu", seed=0).eval()
    x, k = torch.randn(7, 3, 8, 8, dtype=torch.float64), torch.arange(7)
    with torch.no_grad():
        whole = m(x, k)
        monkeypatch.setattr(M, "HEAD_VALUES", 2 * 3 * 256 * 64)  # two rows per micro-batch: 4 calls
        calls = []
        monkeypatch.setattr(m, "_forward", lambda a, b: calls.append(len(a)) or M.EpsModel._forward(m, a, b))
        split = m(x, k)
    assert calls == [2, 2, 2, 1]
    assert torch.equal(whole[0], split[0]) and torch.equal(whole[1], split[1])
