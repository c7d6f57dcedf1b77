"""derivations/NN_*.py run both ways a learner runs them: as a script, and as a notebook on a real kernel.

- ``python derivations/NN_*.py --figures DIR``: exit 0, every step printed with ✓ and none with ✗, every figure the
  script draws written as a PNG;
- the same file read by jupytext and executed cell by cell by nbclient on an ipykernel: any cell error fails the
  test (nbclient raises ``CellExecutionError``); the notebook must show rendered math (``text/latex`` outputs)
  and its figures inline (``image/png``).

A step whose SymPy proof fails raises in the script (``elbo_lab.teach.StepFailed``), so both runs go red.

Cost: each script takes 5–15 CPU-seconds either way (SymPy proofs, torch import, a kernel). The plain test
command runs one of them both ways (``02_forward_diffusion``); ``ELBO_LAB_ALL_DERIVATION_SCRIPTS=1`` (set by
``.ci/run``) runs all seven both ways.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.image import imread

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted((ROOT / "derivations").glob("[0-9][0-9]_*.py"))
ALL = os.environ.get("ELBO_LAB_ALL_DERIVATION_SCRIPTS") == "1"
RUN = SCRIPTS if ALL else [s for s in SCRIPTS if s.stem == "02_forward_diffusion"]
ENV = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _figures_drawn(script: Path) -> list[str]:
    return re.findall(r'teach\.figure\(\w+, "([^"]+)"\)', script.read_text())


def test_there_is_one_script_per_guide_section_and_none_uses_file():
    assert len(SCRIPTS) == 7
    for s in SCRIPTS:
        src = s.read_text()
        assert "__file__" not in src, f"{s.name}: notebooks have no __file__"
        assert src.count("# %%") >= 8, f"{s.name}: too few cells to teach from"


@pytest.mark.parametrize("script", RUN, ids=lambda p: p.stem)
def test_runs_as_a_script(script, tmp_path):
    r = subprocess.run(
        [sys.executable, str(script), "--figures", str(tmp_path)],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "✗" not in r.stdout and re.search(r"all \d+ steps shown, each proven by SymPy ✓", r.stdout)
    for name in _figures_drawn(script):
        drawn = tmp_path / f"{name}.png"
        assert drawn.stat().st_size > 5_000, name
        # the copy the docs embed is what the script draws today (same seeds, same numbers, same picture)
        shipped = ROOT / "docs" / "figures" / "derivations" / f"{name}.png"
        if shipped.exists():
            a, b = imread(drawn), imread(shipped)
            assert a.shape == b.shape and float(abs(a - b).mean()) < 2e-3, (
                f"docs/figures/derivations/{name}.png is stale: python {script.relative_to(ROOT)} "
                "--figures docs/figures/derivations"
            )


@pytest.mark.parametrize("script", RUN, ids=lambda p: p.stem)
def test_executes_as_a_notebook(script, tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    nb = jupytext.read(script)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError (with the traceback) on the first failing cell
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    stray = [o["data"].get("text/plain", "")[:80] for o in outputs if o.get("output_type") == "execute_result"]
    assert not stray, f"{script.name}: a cell ends in a value that the notebook prints as a raw repr: {stray}"
    latex = [o for o in outputs if "text/latex" in o.get("data", {})]
    assert len(latex) >= 5, f"{script.name}: only {len(latex)} rendered formulas"
    pngs = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pngs) == len(_figures_drawn(script)), f"{script.name}: {len(pngs)} inline figures"
    assert not list(tmp_path.glob("*.png")), "a notebook shows its figures inline, it writes no files"
