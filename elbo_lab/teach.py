"""Show a derivation the way a reader meets it: rendered math in a notebook, readable text in a terminal.

The scripts ``derivations/NN_*.py`` (one per guide section, ``# %%`` cells) are built from these helpers.  They
never retype a formula: every expression shown comes from a :class:`~elbo_lab.symbolic.Derivation` (its steps
and exported results) or from the numeric code that the tests check against those exports.  A step whose SymPy
proof fails raises :class:`StepFailed`, so a script exits non-zero and a notebook stops with a cell error.

Figures: in a notebook they appear inline; from a terminal they are written where ``--figures DIR`` says (and
otherwise only described), so running a script never leaves files behind unasked.
"""

from __future__ import annotations

import html
import re
import sys
from pathlib import Path

__all__ = [
    "StepFailed",
    "figure",
    "finish",
    "in_notebook",
    "latex",
    "math",
    "note",
    "report",
    "result",
    "step",
    "steps",
    "table",
]

_SHOWN: dict[int, set[int]] = {}  # id(report) -> the steps shown so far


class StepFailed(AssertionError):
    """A derivation step whose SymPy proof did not go through."""


def in_notebook() -> bool:
    """True inside a Jupyter kernel (ipykernel), False in a terminal (plain ``python`` or IPython)."""
    ip = sys.modules.get("IPython")
    if ip is None:
        return False
    shell = ip.get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def _argv_value(flag: str) -> str | None:
    args = sys.argv[1:] if not in_notebook() else []  # a kernel's argv is its own (-f connection.json)
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def _display(*objs) -> None:
    from IPython.display import display

    display(*objs)


def _html_text(s: str) -> str:
    """Text with `code` spans, as HTML (no Markdown: underscores in x_t stay underscores)."""
    parts = re.split(r"(`[^`\n]+`)", s)
    return "".join(
        f"<code>{html.escape(p[1:-1])}</code>" if len(p) > 1 and p[0] == p[-1] == "`" else html.escape(p) for p in parts
    )


def latex(expr) -> str:
    """LaTeX of a SymPy expression with the derivations' notation (ᾱ_t, β̃_t, SNR(t), ...)."""
    from elbo_lab.symbolic import core

    render = getattr(core, "latex", None) or core._latex
    return render(expr)


def _text(expr) -> str:
    from elbo_lab.symbolic import core

    render = getattr(core, "text", None) or core._text
    return render(expr)


def note(s: str) -> None:
    """A line of prose (``code`` spans allowed)."""
    if in_notebook():
        from IPython.display import HTML

        _display(HTML(f"<p>{_html_text(s)}</p>"))
    else:
        print(s)


def math(tex: str, text: str) -> None:
    """A formula: ``tex`` rendered in a notebook, ``text`` printed in a terminal."""
    if in_notebook():
        from IPython.display import Math

        _display(Math(tex))
    else:
        print("    " + text)


def report(name: str):
    """Build and verify derivation ``name`` (every step's SymPy proof runs once); print its headline."""
    from elbo_lab.symbolic import get

    rep = get(name).verify()
    d = rep.derivation
    mark = "✓" if rep.ok else "✗"
    note(
        f"{d.equation} · {d.title} — {len(rep.steps)} steps, {sum(s.checked for s in rep.steps)} proven {mark} "
        f"({rep.seconds:.2f} s; the code: `elbo_lab/symbolic/{d.name}.py`)"
    )
    return rep


def step(rep, i: int):
    """Show step ``i`` (1-based) of a verified derivation: statement, before → after, why, and its proof.

    Returns the :class:`~elbo_lab.symbolic.Step`, whose SymPy objects (``.before``, ``.after``) a reader can
    take further in the next cell.  Raises :class:`StepFailed` if its proof did not go through.
    """
    s = rep.steps[i - 1]
    st = s.step
    _SHOWN.setdefault(id(rep), set()).add(i)
    mark = "✓" if s.checked else "✗"
    if in_notebook():
        from IPython.display import HTML, Math

        _display(
            HTML(f"<p><b>{i}. {_html_text(st.statement)}</b> {mark}</p>"),
            Math(st.latex()),
            HTML(
                f"<p><i>because</i> {_html_text(st.justification)}<br><i>SymPy proof:</i> "
                f"{_html_text(st.check.description)} → {_html_text(s.detail)} ({s.seconds:.2f} s)</p>"
            ),
        )
    else:
        print(f"{mark} {i}. {st.statement}")
        print(f"      {st.latex() if '--latex' in sys.argv[1:] else st.text()}")
        print(f"      because: {st.justification}")
        print(f"      proof:   {st.check.description} → {s.detail} ({s.seconds:.2f} s)")
    if not s.checked:
        raise StepFailed(f"{rep.derivation.name} step {i} is not proven: {st.statement} ({s.detail})")
    return st


def steps(rep, upto: int | None = None) -> None:
    """Show, in order, every step not shown yet up to step ``upto`` (1-based; all remaining steps if None).

    Cells name where they stop rather than every step, so a step the library adds later still appears (in the
    cell that covers its place) instead of going unseen.  (The steps themselves are ``rep.steps[i].step``.)
    """
    shown = _SHOWN.setdefault(id(rep), set())
    last = len(rep.steps) if upto is None else min(upto, len(rep.steps))
    for i in range(1, last + 1):
        if i not in shown:
            step(rep, i)


def finish(rep) -> None:
    """End of a derivation: show whatever steps are left, and confirm that every step was shown and proven."""
    steps(rep)
    if not rep.ok:
        raise StepFailed(f"{rep.derivation.name}: not every step is proven")
    note(f"{rep.derivation.equation}: all {len(rep.steps)} steps shown, each proven by SymPy ✓")


def result(rep, name: str):
    """Show an exported result (the expression the numeric code is tested against); return it."""
    r = rep.derivation.result(name)
    head = f"{r.name}({', '.join(r.arg_names)})"
    if in_notebook():
        from IPython.display import HTML, Math

        _display(
            HTML(f"<p>Export <code>{html.escape(head)}</code>: {_html_text(r.description)}</p>"), Math(latex(r.expr))
        )
    else:
        print(f"export {head}: {r.description}")
        print(f"      = {_text(r.expr)}")
    return r


def table(header: list[str], rows: list[list]) -> None:
    """A small table of numbers (HTML in a notebook, aligned columns in a terminal)."""
    cells = [[str(c) for c in r] for r in rows]
    if in_notebook():
        from IPython.display import HTML

        th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        trs = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells)
        _display(HTML(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"))
        return
    widths = [max(len(h), *(len(r[j]) for r in cells)) for j, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def figure(fig, name: str) -> Path | None:
    """Show a matplotlib figure inline (notebook), or save it as ``DIR/name.png`` with ``--figures DIR``."""
    import matplotlib.pyplot as plt

    if in_notebook():  # as PNG bytes: shown inline whatever matplotlib backend the kernel runs
        import io

        from IPython.display import Image

        buf = io.BytesIO()
        fig.savefig(buf, dpi=110, bbox_inches="tight", format="png")
        plt.close(fig)
        _display(Image(data=buf.getvalue(), format="png"))
        return None
    where = _argv_value("--figures")
    if where is None:
        print(f"(figure {name!r}: open this script as a notebook to see it, or add --figures DIR to save it)")
        plt.close(fig)
        return None
    path = Path(where) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".png.tmp")
    fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    tmp.replace(path)
    plt.close(fig)
    print(f"figure written: {path}")
    return path
