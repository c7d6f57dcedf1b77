"""MkDocs hook: generate each derivation's steps from SymPy at build time (never retyped), embed figures and
check results, render every formula to MathML, and fail the (strict) build when a derivation no longer checks,
a figure is missing or a formula cannot be converted.

Directives in the Markdown pages (each on its own line):

- ``{{ derivation NAME }}``  -> the derivation's steps as LaTeX with ✓ per step (build fails on a ✗).
- ``{{ figure NAME caption }}`` -> ``docs/figures/NAME.png`` (build fails when the file is missing).
- ``{{ checks PREFIX }}``    -> the rows of ``docs/results/checks.json`` (written by ``elbo-lab verify --json``)
  whose claim id starts with PREFIX, with their latest observed value and pass/fail.

Formulas (``\\( \\)``, ``\\[ \\]``, ``$$ $$`` in the pages, wrapped by pymdownx.arithmatex) become MathML when the
page is built (:func:`elbo_lab.mathml.render_math_in_html`): the site needs no JavaScript and no network to
show them.  This file is build code: ``mkdocs.yml`` excludes it from the published site.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

DOCS = Path(__file__).resolve().parent
_DIRECTIVE = re.compile(r"^\{\{[ \t]*(derivation|figure|checks)[ \t]+(\S+)(?:[ \t]+(.*?))?[ \t]*\}\}[ \t]*$", re.M)


class DocsBuildError(Exception):
    pass


_MD_SPECIAL = re.compile(r"([\\*_\[\]$#|])")


def _md_text(s: str) -> str:
    """Text as Markdown shows it literally: ``code`` spans kept, characters that Markdown or arithmatex would
    read (``_`` and ``*`` as emphasis, ``$`` as math, ...) escaped outside them."""
    parts = re.split(r"(`[^`]*`)", s)
    return "".join(
        p if p.startswith("`") and p.endswith("`") and len(p) > 1 else _MD_SPECIAL.sub(r"\\\1", p) for p in parts
    )


def _derivation(name: str) -> str:
    from elbo_lab.symbolic import get

    report = get(name).verify()
    if not report.ok:
        bad = [s.step.statement for s in report.steps if not s.checked]
        raise DocsBuildError(f"derivation {name!r} no longer checks: {bad}")
    d = report.derivation
    script = {
        "E1": "01_vae_elbo.py",
        "E2": "01_vae_elbo.py",
        "E3": "01_vae_elbo.py",
        "E4": "01_vae_elbo.py",
        "E5": "02_forward_diffusion.py",
        "E6": "03_reverse_process.py",
        "E7": "04_diffusion_elbo.py",
        "E8": "04_diffusion_elbo.py",
        "E9": "05_simplified_objective.py",
        "E10": "05_simplified_objective.py",
        "E11": "06_sampling.py",
        "E12": "07_continuous_time.py",
    }.get(d.equation, "")
    out = [
        f'???+ success "{d.equation} · {_md_text(d.title)} — {len(report.steps)} steps, all ✓ '
        f'({report.seconds:.2f} s)"',
        "",
        f"    Generated from `elbo_lab/symbolic/{name}.py` at build time; run it with "
        f"`elbo-lab derive {name}` or `python derivations/{script}`.",
        "",
    ]
    for i, s in enumerate(report.steps, 1):
        out.append(f"    **{i}. {_md_text(s.step.statement)}** ✓  ")
        out.append(f"    *{_md_text(s.step.justification)}* — proof: {_md_text(s.step.check.description)}")
        out.append("")
        out.append("    $$")
        out.append("    " + s.step.latex().replace("\n", " "))
        out.append("    $$")
        out.append("")
    if d.results:
        out.append(
            "    Exported results (lambdified for the numeric tests): "
            + ", ".join(f"`{r.name}({', '.join(r.arg_names)})`" for r in d.results.values())
        )
        out.append("")
    return "\n".join(out)


def _figure(name: str, caption: str | None, page_src: str) -> str:
    path = DOCS / "figures" / f"{name}.png"
    if not path.exists():
        how = (
            "python derivations/NN_*.py --figures docs/figures/derivations"
            if name.startswith("derivations/")
            else "elbo-lab run, then copy its PNGs here"
        )
        raise DocsBuildError(f"figure {path.relative_to(DOCS.parent)} is missing (regenerate: {how})")
    depth = page_src.count("/")
    rel = "../" * depth + f"figures/{name}.png"
    text = _md_text(caption or name)
    return f"![{text}]({rel})\n\n*{text}*"


def _checks(prefix: str) -> str:
    path = DOCS / "results" / "checks.json"
    if not path.exists():
        raise DocsBuildError(f"{path} is missing (run `elbo-lab verify --json {path}`)")
    data = json.loads(path.read_text())
    rows = [c for c in data["claims"] if c["id"].startswith(prefix)]
    if not rows:
        raise DocsBuildError(f"no check with id prefix {prefix!r} in {path}")
    out = [
        f"Latest results (`elbo-lab verify`, commit `{data.get('git_commit', '?')[:10]}`):",
        "",
        "| check | expected | observed | tolerance | |",
        "|---|---|---|---|---|",
    ]
    for c in rows:
        mark = "✓" if c["passed"] else "✗"
        cells = [f"`{c['id']}` {_md_text(c['statement'])}"] + [_md_text(str(c[k])) for k in ("expected", "observed")]
        out.append(f"| {' | '.join(cells)} | {_md_text(str(c['tolerance']))} | {mark} |")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    def repl(m: re.Match) -> str:
        kind, arg, rest = m.group(1), m.group(2), m.group(3)
        if kind == "derivation":
            return _derivation(arg)
        if kind == "figure":
            return _figure(arg, rest, page.file.src_uri)
        return _checks(arg)

    return _DIRECTIVE.sub(repl, markdown)


def on_page_content(html: str, page, config, files) -> str:
    from elbo_lab.mathml import MathConversionError, render_math_in_html

    try:
        return render_math_in_html(html)
    except MathConversionError as exc:
        raise DocsBuildError(f"{page.file.src_uri}: {exc}") from None


def on_files(files, config):
    """Serve the package's math font with the site (elbo_lab/assets/README.md): formulas look the same on every
    machine, with or without a math font of its own, and nothing is fetched."""
    from mkdocs.structure.files import File

    from elbo_lab.mathml import MATH_FONT, math_font_css

    font = f"assets/fonts/{MATH_FONT.name}"
    files.append(File.generated(config, font, abs_src_path=str(MATH_FONT)))
    licence = MATH_FONT.with_name("NotoSansMath-OFL.txt")
    files.append(File.generated(config, f"assets/fonts/{licence.name}", abs_src_path=str(licence)))
    files.append(File.generated(config, "stylesheets/math-font.css", content=math_font_css(f"../{font}")))
    return files
