"""LaTeX → MathML, once, when a page is written: formulas that render with no network and no JavaScript.

The docs (``docs/hooks.py``) and ``report.html`` (:mod:`elbo_lab.report`) both call :func:`to_mathml` on the
LaTeX that the derivations print (:meth:`elbo_lab.symbolic.Step.latex`) and on the formulas typed in the pages.
Browsers render MathML Core natively (Chromium ≥ 109, Firefox, Safari), so a page opened on a train, behind a
proxy or in an air-gapped lab shows the same formulas as online: nothing is fetched from a CDN.

The converter is latex2mathml; two things are adjusted for MathML Core, which ignores most ``mathvariant``
values: letters in \\mathcal / \\mathbb / \\mathbf ... become the Unicode mathematical letters (𝒩, 𝔼, 𝐱), and
\\tilde / \\bar / \\hat are marked as accents (set tight on the letter, as TeX does).  A formula the converter
does not understand (an unknown command left as ``\\foo`` in the output) raises :class:`MathConversionError`
rather than showing raw LaTeX to a reader.
"""

from __future__ import annotations

import base64
import html
import re
import unicodedata
from pathlib import Path

__all__ = ["MATH_FONT", "MathConversionError", "math_font_css", "render_math_in_html", "to_mathml", "visible_text"]

# An OpenType math font shipped with the package (see assets/README.md): without one, browsers draw MathML but
# cannot place accents or stretch brackets and braces.
MATH_FONT = Path(__file__).resolve().parent / "assets" / "NotoSansMath-Regular.woff2"
_FONT_STACK = '"ELBO Lab Math", "Noto Sans Math", "STIX Two Math", "Latin Modern Math", "Cambria Math", math'


def math_font_css(url: str | None = None) -> str:
    """CSS that makes every ``<math>`` use the shipped math font: from ``url``, or embedded (data URL) if None."""
    if url is None:
        url = "data:font/woff2;base64," + base64.b64encode(MATH_FONT.read_bytes()).decode("ascii")
    return (
        f'@font-face {{ font-family: "ELBO Lab Math"; src: url("{url}") format("woff2"); font-display: swap; }}\n'
        f"math {{ font-family: {_FONT_STACK}; }}\n"
    )


class MathConversionError(ValueError):
    """A formula could not be turned into MathML (raw LaTeX would have reached the reader)."""


_VARIANT_NAMES = {
    "script": "SCRIPT",
    "double-struck": "DOUBLE-STRUCK",
    "bold": "BOLD",
    "fraktur": "FRAKTUR",
    "bold-italic": "BOLD ITALIC",
    "sans-serif": "SANS-SERIF",
    "bold-script": "BOLD SCRIPT",
}
_GREEK = {
    unicodedata.lookup(f"GREEK SMALL LETTER {n}"): f"SMALL {n}"
    for n in "ALPHA BETA GAMMA DELTA EPSILON ZETA ETA THETA IOTA KAPPA LAMDA MU NU XI OMICRON PI RHO SIGMA TAU "
    "UPSILON PHI CHI PSI OMEGA".split()
}


def _styled(ch: str, variant: str) -> str | None:
    """The Unicode mathematical letter for ``ch`` in ``variant`` (𝒩 for script N), or None if there is none."""
    style = _VARIANT_NAMES.get(variant)
    if style is None or len(ch) != 1:
        return None
    if "A" <= ch <= "Z" or "a" <= ch <= "z":
        letter = f"{'CAPITAL' if ch.isupper() else 'SMALL'} {ch.upper()}"
    elif ch in _GREEK:
        letter = _GREEK[ch]
    elif ch.isdigit() and style in ("BOLD", "DOUBLE-STRUCK", "SANS-SERIF"):
        letter = f"DIGIT {unicodedata.name(ch).split()[-1]}"
    else:
        return None
    for name in (f"MATHEMATICAL {style} {letter}", f"{style} {letter}"):  # ℬ, ℝ, ... live outside the block
        try:
            return unicodedata.lookup(name)
        except KeyError:
            continue
    return None


_MI_VARIANT = re.compile(r'<mi mathvariant="([a-z-]+)">([^<]*)</mi>')


def _fix_variants(m: re.Match) -> str:
    variant, text = m.group(1), html.unescape(m.group(2))
    styled = _styled(text, variant)
    return f"<mi>{styled}</mi>" if styled else m.group(0)


def visible_text(markup: str) -> str:
    """The text a reader sees in an HTML/MathML fragment (tags removed, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", markup))


def to_mathml(latex: str, *, display: bool = False) -> str:
    """``latex`` as a ``<math>`` element (``display=True``: a displayed formula on its own line)."""
    from latex2mathml.converter import convert

    source = " ".join(latex.split())
    try:
        out = convert(source, display="block" if display else "inline")
    except Exception as exc:  # the converter raises its own exception types for malformed input
        raise MathConversionError(f"cannot convert LaTeX to MathML ({type(exc).__name__}: {exc}): {source}") from None
    out = _MI_VARIANT.sub(_fix_variants, out)
    # accents: μ̃ and ᾱ are accents on one letter, not an over-script floating above it
    out = re.sub(r"<mover>(<mi>[^<]*</mi>)<mo", r'<mover accent="true">\1<mo', out)
    shown = visible_text(out)
    if "\\" in shown:
        raise MathConversionError(f"LaTeX left unconverted in the MathML ({shown!r}): {source}")
    return out


# What pymdownx.arithmatex (generic mode) leaves in the HTML: the LaTeX, HTML-escaped, in these wrappers.
_ARITHMATEX_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)
_ARITHMATEX_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)


def render_math_in_html(page: str) -> str:
    """Replace every arithmatex math wrapper in ``page`` by MathML (display formulas in ``div.math``)."""

    def block(m: re.Match) -> str:
        return f'<div class="math">{to_mathml(html.unescape(m.group(1)), display=True)}</div>'

    def inline(m: re.Match) -> str:
        return to_mathml(html.unescape(m.group(1)))

    return _ARITHMATEX_INLINE.sub(inline, _ARITHMATEX_BLOCK.sub(block, page))
