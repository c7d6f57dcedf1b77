"""Formulas render with the network off: LaTeX → MathML (elbo_lab.mathml) in the docs and in report.html.

Two layers:

- without a browser: every derivation step's LaTeX and every formula typed in the docs converts to MathML with no
  LaTeX left in its visible text; the report's HTML holds MathML, no raw LaTeX, no CDN, no literal backticks;
- in headless Chromium with the network off (a fresh network namespace via ``unshare -n`` where the machine
  allows it, and in any case a dead proxy and a host resolver that resolves nothing): the built docs pages and a
  generated report.html are loaded, their DOM is dumped and its visible text searched for raw LaTeX; MathML
  elements must be there.  Screenshots go to ``$ELBO_LAB_SCREENSHOTS`` (when set) for a person to look at.

The browser tests run when ``ELBO_LAB_BROWSER_TESTS=1`` or ``ELBO_LAB_REQUIRE_BROWSER=1`` is set (they build the
site and run a smoke-budget pipeline: about a minute of CPU), and skip when Chromium is not installed
(``apt-get install chromium``) or, for the docs pages, when the docs extra is not installed.
``ELBO_LAB_REQUIRE_BROWSER=1`` (set by ``.ci/run``) turns those skips into failures.  ``ELBO_LAB_SITE`` points
them at an already built site (else the site is built here with mkdocs), ``ELBO_LAB_REPORT`` at an already
written report.html (else a smoke-budget ``elbo-lab run`` writes one).
"""

from __future__ import annotations

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from elbo_lab.mathml import MathConversionError, render_math_in_html, to_mathml, visible_text

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = os.environ.get("ELBO_LAB_REQUIRE_BROWSER") == "1"
WANTED = REQUIRED or os.environ.get("ELBO_LAB_BROWSER_TESTS") == "1"
RAW_LATEX = re.compile(
    r"\\\[|\\\(|\\\]|\\\)|\$\$|\\(?:frac|sqrt|mathrm|mathcal|mathbb|bar|tilde|hat|alpha|beta|"
    r"varepsilon|sigma|mu|log|left|right|big|Big|sum|int|le|ge|text|underbrace)(?![a-z])"
)


def _skip(reason: str):
    if REQUIRED:
        pytest.fail(f"{reason} (ELBO_LAB_REQUIRE_BROWSER=1: the browser check is mandatory here)")
    pytest.skip(reason)


# ------------------------------------------------------------------------------ the conversion itself


def test_every_derivation_step_converts_to_mathml():
    from elbo_lab.symbolic import get, names

    n = 0
    for name in names():
        for step in get(name).steps:
            m = to_mathml(step.latex(), display=True)
            assert m.startswith("<math") and 'display="block"' in m, (name, step.statement)
            assert not RAW_LATEX.search(visible_text(m)), (name, step.latex())
            n += 1
    assert n > 50


def test_letter_styles_become_unicode_letters_and_accents_sit_on_the_letter():
    m = to_mathml(r"\mathcal N(\tilde\mu_t, \bar\alpha_t) \mathbb{E} \mathbf x")
    assert "𝒩" in m and "𝐱" in m and "𝔼" in visible_text(m)
    assert 'mathvariant="script"' not in m  # MathML Core would show a plain N
    assert m.count('<mover accent="true">') == 2


def test_unknown_latex_is_an_error_not_raw_text_for_the_reader():
    with pytest.raises(MathConversionError, match="unconverted"):
        to_mathml(r"x = \notacommand{y}")


def test_arithmatex_wrappers_are_replaced():
    page = (
        '<p>a <span class="arithmatex">\\(x_t &lt; 1\\)</span> b</p>'
        '<div class="arithmatex">\\[\\frac{1}{\\sqrt{\\alpha_t}}\\]</div>'
    )
    out = render_math_in_html(page)
    assert out.count("<math") == 2 and '<div class="math"><math' in out
    assert "arithmatex" not in out and not RAW_LATEX.search(visible_text(out))
    assert "&lt;" in out or "&#x0003C;" in out  # x_t < 1 decoded from the HTML escape, re-encoded as MathML


def test_every_formula_typed_in_the_docs_converts():
    """The hand-written formulas of docs/*.md (\\( \\), \\[ \\], $$ $$) — a typo fails here, not in a reader's face."""
    formulas = []
    for md in sorted((ROOT / "docs").rglob("*.md")):
        text = re.sub(r"```.*?```", "", md.read_text(), flags=re.S)
        text = re.sub(r"`[^`\n]*`", "", text)
        formulas += [(md.name, f, True) for f in re.findall(r"\$\$(.*?)\$\$", text, flags=re.S)]
        formulas += [(md.name, f, False) for f in re.findall(r"\\\((.*?)\\\)", text, flags=re.S)]
    assert len(formulas) > 30
    for page, f, display in formulas:
        m = to_mathml(f, display=display)
        assert not RAW_LATEX.search(visible_text(m)), (page, f)


def _tiny_report():
    from elbo_lab.report import Report

    rep = Report("t")
    sec = rep.section("Derivations")
    sec.text("✓ E6 Posterior (`elbo-lab derive posterior`)")
    sec.math(r"\tilde\beta_t = \frac{1-\bar\alpha_{t-1}}{1-\bar\alpha_t}\beta_t")
    sec.table(["claim"], [["`E6.derivation` every step"]])
    return rep.to_html()


def test_report_html_has_mathml_code_spans_and_no_cdn():
    page = _tiny_report()
    assert "<math" in page and "<script" not in page and "mathjax" not in page.lower()
    remote = re.search(r"""(?:src|href)=["']?(?:https?:)?//|url\(["']?(?:https?:)?//""", page)
    assert not remote, f"report.html loads from the network: {remote}"
    assert "@font-face" in page and "data:font/woff2;base64," in page  # the math font travels with the page
    body = visible_text(page.split("<body>", 1)[1])
    assert not RAW_LATEX.search(body) and "`" not in body
    assert "<code>elbo-lab derive posterior</code>" in page and "<code>E6.derivation</code>" in page


# ------------------------------------------------------------------------------ headless Chromium, network off


def _chromium() -> str:
    if not WANTED:
        pytest.skip("browser tests are opt-in: ELBO_LAB_BROWSER_TESTS=1 (mandatory in .ci/run)")
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    _skip("Chromium is not installed (apt-get install chromium)")


def _netns_prefix() -> list[str]:
    """``unshare -n`` (a network namespace with no interfaces but loopback) when this machine allows it."""
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "-n", "true"], capture_output=True).returncode == 0:
        return [unshare, "-n"]
    return []


def _browser(url: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [
            *_netns_prefix(),
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={profile}",
            # the network is off even without a namespace: every host resolves to nothing, every proxy is dead
            "--proxy-server=127.0.0.1:9",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
            url,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


class _Visible(html.parser.HTMLParser):
    """Visible text of a DOM dump (no script/style; code and pre kept apart: they may quote LaTeX on purpose)."""

    HIDDEN = {"script", "style", "noscript", "template", "title", "code", "pre"}

    def __init__(self):
        super().__init__()
        self.depth, self.parts, self.math = 0, [], 0

    def handle_starttag(self, tag, attrs):
        if tag in self.HIDDEN:
            self.depth += 1
        if tag == "math":
            self.math += 1

    def handle_endtag(self, tag):
        if tag in self.HIDDEN:
            self.depth -= 1

    def handle_data(self, data):
        if self.depth == 0:
            self.parts.append(data)


def _rendered(url: str, screenshot: str | None = None) -> tuple[str, int]:
    """(visible text, number of <math> elements) of ``url`` as headless Chromium builds its DOM, offline."""
    dom = _browser(url, "--dump-dom")
    assert dom.returncode == 0 and "<html" in dom.stdout, dom.stderr[-2000:]
    if screenshot:
        shot = _browser(url, f"--screenshot={screenshot}", "--window-size=1200,2400", "--hide-scrollbars")
        assert shot.returncode == 0 and Path(screenshot).stat().st_size > 10_000, shot.stderr[-2000:]
    p = _Visible()
    p.feed(dom.stdout)
    return "".join(p.parts), p.math


def _shot(name: str) -> str | None:
    d = os.environ.get("ELBO_LAB_SCREENSHOTS")
    if not d:
        return None
    Path(d).mkdir(parents=True, exist_ok=True)
    return str(Path(d) / f"{name}.png")


def _raw_latex_in(text: str) -> list[str]:
    return [text[max(0, m.start() - 40) : m.end() + 40] for m in RAW_LATEX.finditer(text)]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _chromium()
    given = os.environ.get("ELBO_LAB_SITE")
    if given:
        return Path(given)
    mkdocs = shutil.which("mkdocs") or (Path(sys.executable).parent / "mkdocs")
    if not Path(mkdocs).exists():
        _skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("site")
    r = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(out)], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return out


GUIDE_PAGES = sorted(p.stem for p in (ROOT / "docs" / "guide").glob("*.md"))


@pytest.mark.parametrize("page", GUIDE_PAGES)
def test_docs_page_renders_math_offline_in_chromium(site, page):
    url = (site / "guide" / page / "index.html").as_uri()
    text, n_math = _rendered(url, _shot(f"docs-{page}"))
    source = (ROOT / "docs" / "guide" / f"{page}.md").read_text()
    has_math = "$$" in source or "\\(" in source or "{{ derivation" in source
    assert not _raw_latex_in(text), f"{page}: raw LaTeX in the visible text: {_raw_latex_in(text)[:3]}"
    assert not has_math or n_math > 0, f"{page}: no MathML element in the rendered page"
    # every derivation step's statement reads as written (no underscores eaten by Markdown emphasis, no `$`
    # turned into math): its text outside code spans appears verbatim on the page
    from elbo_lab.symbolic import get

    shown = " ".join(text.split())
    for name in re.findall(r"\{\{ derivation (\S+) \}\}", source):
        for step in get(name).steps:
            for piece in re.split(r"`[^`]*`", step.statement):
                piece = " ".join(piece.split())
                assert piece in shown, f"{page}: step of {name} not shown as written: {piece!r}"
    # check-table rows: a "|" in a claim's text must not split its table cell
    claims = json.loads((ROOT / "docs" / "results" / "checks.json").read_text())["claims"]
    for prefix in re.findall(r"^\{\{ checks (\S+) \}\}$", source, flags=re.M):
        for c in (c for c in claims if c["id"].startswith(prefix)):
            for piece in re.split(r"`[^`]*`", c["statement"]):
                piece = " ".join(piece.split())
                assert piece in shown, f"{page}: check {c['id']} not shown as written: {piece!r}"
    # figure captions too (they hold x_0, x_{t−1}, ...: Markdown must not eat the underscores)
    for caption in re.findall(r"^\{\{ figure \S+ (.*?) \}\}$", source, flags=re.M):
        assert " ".join(caption.split()) in shown, f"{page}: caption not shown as written: {caption[:80]!r}"


def test_site_publishes_no_build_code_and_loads_nothing_from_outside(site):
    assert not list(site.rglob("*.py")), "build code (docs/hooks.py) published with the site"
    for page in site.rglob("*.html"):
        s = page.read_text()
        remote = re.findall(r'<(?:script|img|iframe)[^>]*src="((?:https?:)?//[^"]*)"', s)
        remote += [h for h in re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="((?:https?:)?//[^"]*)"', s)]
        assert not remote, f"{page.relative_to(site)} loads {remote}"


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    _chromium()
    given = os.environ.get("ELBO_LAB_REPORT")
    if given:
        return Path(given)
    from elbo_lab.run import run_pipeline

    out = tmp_path_factory.mktemp("run") / "results"
    assert run_pipeline(out, mode="smoke", seed=0, log=lambda s: None) == 0
    return out / "report.html"


def test_report_html_renders_math_offline_in_chromium(report_html):
    text, n_math = _rendered(report_html.as_uri(), _shot("report"))
    assert not _raw_latex_in(text), f"raw LaTeX in report.html: {_raw_latex_in(text)[:3]}"
    assert n_math >= 50, f"only {n_math} MathML elements in report.html"
    assert "`" not in text, "literal backticks in report.html"
