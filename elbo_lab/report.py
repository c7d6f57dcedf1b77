"""The run report: one structured document rendered twice, as Markdown and as self-contained HTML.

The HTML needs no network and no JavaScript: formulas are converted to MathML when the report is written
(:func:`elbo_lab.mathml.to_mathml`; browsers render MathML natively) in an embedded math font, figures are
files beside it, and
`code` spans in the text become ``<code>`` elements.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field

from .mathml import math_font_css, to_mathml

__all__ = ["Report", "Section"]


@dataclass
class Section:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)  # (kind, payload)

    def text(self, s: str) -> Section:
        self.blocks.append(("text", s))
        return self

    def math(self, latex: str) -> Section:
        self.blocks.append(("math", latex))
        return self

    def table(self, header: list[str], rows: list[list[object]]) -> Section:
        self.blocks.append(("table", (header, rows)))
        return self

    def figure(self, png: str, caption: str) -> Section:
        self.blocks.append(("figure", (png, caption)))
        return self

    def alert(self, s: str) -> Section:
        self.blocks.append(("alert", s))
        return self

    def code(self, s: str) -> Section:
        self.blocks.append(("code", s))
        return self


@dataclass
class Report:
    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        s = Section(title)
        self.sections.append(s)
        return s

    # ---------------------------------------------------------------- Markdown
    def to_markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for s in self.sections:
            out += [f"## {s.title}", ""]
            for kind, p in s.blocks:
                if kind == "text":
                    out += [str(p), ""]
                elif kind == "alert":
                    out += [f"> **{p}**", ""]
                elif kind == "math":
                    out += ["$$", str(p), "$$", ""]
                elif kind == "code":
                    out += ["```", str(p), "```", ""]
                elif kind == "table":
                    header, rows = p
                    out.append("| " + " | ".join(map(str, header)) + " |")
                    out.append("|" + "---|" * len(header))
                    for r in rows:
                        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
                    out.append("")
                elif kind == "figure":
                    png, caption = p
                    out += [f"![{caption}]({png})", "", f"*{caption}*", ""]
        return "\n".join(out)

    # ---------------------------------------------------------------- HTML
    def to_html(self) -> str:
        e = html.escape
        t = _inline_html
        body = [f"<h1>{e(self.title)}</h1>"]
        toc = "".join(f'<li><a href="#s{i}">{e(s.title)}</a></li>' for i, s in enumerate(self.sections))
        body.append(f"<nav><ol>{toc}</ol></nav>")
        for i, s in enumerate(self.sections):
            body.append(f'<section id="s{i}"><h2>{e(s.title)}</h2>')
            for kind, p in s.blocks:
                if kind == "text":
                    body.append(f"<p>{t(str(p))}</p>")
                elif kind == "alert":
                    body.append(f'<p class="alert">{t(str(p))}</p>')
                elif kind == "math":
                    body.append(f'<div class="math">{to_mathml(str(p), display=True)}</div>')
                elif kind == "code":
                    body.append(f"<pre>{e(str(p))}</pre>")
                elif kind == "table":
                    header, rows = p
                    th = "".join(f"<th>{e(str(h))}</th>" for h in header)
                    trs = "".join("<tr>" + "".join(f"<td>{t(str(c))}</td>" for c in r) + "</tr>" for r in rows)
                    body.append(f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>")
                elif kind == "figure":
                    png, caption = p
                    body.append(
                        f'<figure><img src="{e(png)}" alt="{e(caption)}"><figcaption>{t(caption)}</figcaption></figure>'
                    )
            body.append("</section>")
        return _HTML.format(title=e(self.title), body="\n".join(body), math_font=math_font_css())


def _inline_html(s: str) -> str:
    """Plain text as HTML: escaped, with `code` spans (as the Markdown report writes them) as <code> elements."""
    return "".join(
        f"<code>{html.escape(part[1:-1])}</code>" if len(part) > 1 and part[0] == part[-1] == "`" else html.escape(part)
        for part in re.split(r"(`[^`\n]+`)", s)
    )


_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
{math_font}
body {{ font-family: system-ui, sans-serif; max-width: 72rem; margin: 2rem auto; padding: 0 1rem; line-height: 1.45;
       color: #1b1b1b; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.5rem; text-align: left; vertical-align: top; }}
th {{ background: #f0f0f0; }}
figure {{ margin: 1rem 0; }} figure img {{ max-width: 100%; border: 1px solid #ddd; }}
figcaption {{ font-size: 0.9rem; color: #444; }}
.math {{ overflow-x: auto; overflow-y: hidden; margin: 0.4rem 0 1rem; }}
code {{ background: #f3f3f3; padding: 0 0.2em; border-radius: 3px; font-size: 0.9em; }}
.alert {{ background: #fde8e8; border-left: 4px solid #c00; padding: 0.5rem; font-weight: bold; }}
pre {{ background: #f6f6f6; padding: 0.5rem; overflow-x: auto; }}
</style></head><body>
{body}
</body></html>
"""
