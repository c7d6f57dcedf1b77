"""A derivation is data: ordered steps, each proven by a SymPy computation.

Every step records a statement in words, the expression *before* and *after* the step, the justification,
and a :class:`Check` -- a SymPy computation (``simplify(a - b) == 0``, an ``integrate``, a comparison of
polynomial coefficients, a limit) that returns ``False`` when the step is wrong.  Nothing is checked at
import time: :meth:`Derivation.verify` runs the checks and times them.

A derivation also *exports* its results (:class:`Result`): SymPy expressions with a fixed argument order,
available as ``lambdify``-ed numpy and torch callables.  The numeric code of :mod:`elbo_lab` is tested
against these callables; SymPy is the source of truth.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

__all__ = [
    "Check",
    "Derivation",
    "DerivationReport",
    "Result",
    "Step",
    "StepReport",
    "coefficients_equal",
    "equal",
    "holds",
    "integral_equals",
    "is_zero",
    "limit_equals",
]


# --------------------------------------------------------------------------------------------------------
# Checks: SymPy computations that prove (or refute) one step
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A SymPy computation proving a step. ``run()`` returns ``(ok, detail)``; exceptions count as failure."""

    description: str
    fn: Callable[[], tuple[bool, str]]

    def run(self) -> tuple[bool, str]:
        try:
            ok, detail = self.fn()
        except Exception as exc:  # a check that cannot be computed has not been proven
            return False, f"{self.description}: raised {type(exc).__name__}: {exc}"
        return bool(ok), detail


def _lhs_minus_rhs(a: sp.Basic, b: sp.Basic) -> sp.Expr:
    if isinstance(a, sp.Equality):
        a = a.lhs - a.rhs
    if isinstance(b, sp.Equality):
        b = b.lhs - b.rhs
    return sp.sympify(a) - sp.sympify(b)


_SIMPLIFIERS: dict[str, Callable[[sp.Expr], sp.Expr]] = {
    "simplify": sp.simplify,
    "expand": sp.expand,
    "cancel": lambda e: sp.cancel(sp.together(e)),
    "expand_log": lambda e: sp.simplify(sp.expand_log(sp.expand(e), force=True)),
    "powsimp": lambda e: sp.simplify(sp.powsimp(sp.powdenest(e, force=True), force=True)),
    "trigsimp": sp.trigsimp,
}


def is_zero(expr: sp.Expr, *, method: str = "simplify", description: str | None = None) -> Check:
    """Check that ``expr`` simplifies to exactly 0 (``method``: simplify, expand, cancel, expand_log, ...)."""
    simplifier = _SIMPLIFIERS[method]

    def fn() -> tuple[bool, str]:
        residual = simplifier(sp.sympify(expr))
        ok = residual == 0
        return ok, "residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(description or f"{method}(expression) == 0", fn)


def equal(a: sp.Basic, b: sp.Basic, *, method: str = "simplify") -> Check:
    """Check ``a == b`` symbolically: ``method(a - b) == 0``."""
    return is_zero(_lhs_minus_rhs(a, b), method=method, description=f"{method}(before - after) == 0")


def coefficients_equal(
    a: sp.Expr, b: sp.Expr, gens: Sequence[sp.Symbol], *, method: str = "cancel", degree: int | None = None
) -> Check:
    """Check that ``a`` and ``b``, as polynomials in ``gens``, have equal coefficients (each difference == 0).

    Much faster than ``simplify(a - b)`` for large identities.  Two routes, each coefficient simplified by
    ``method``:

    - ``degree=None``: expand ``a - b`` and compare its ``sp.Poly`` coefficients in ``gens``;
    - ``degree=n``: for a claimed polynomial of total degree <= n, check that every Taylor coefficient at 0 (all
      partial derivatives of order <= n at ``gens = 0``) vanishes, and that every derivative of order n + 1 does
      too (nothing beyond the claimed degree).  Equivalent, without expanding the whole difference: milliseconds
      where the expansion takes seconds, e.g. with nested √(1 - ᾱ_t) in the coefficients (E9, E11).

    For identities between log-densities (logs of the parameters in the coefficients) see
    :func:`.algebra.log_identity`.
    """
    gens = tuple(gens)
    simplifier = _SIMPLIFIERS[method]
    names = ", ".join(map(str, gens))

    def by_poly() -> tuple[bool, str]:
        diff = sp.expand(_lhs_minus_rhs(a, b))
        poly = sp.Poly(diff, *gens)
        bad = []
        for monom, coeff in poly.terms():
            if simplifier(coeff) != 0:
                bad.append(monom)
        if bad:
            return False, f"{len(bad)} of {len(poly.terms())} coefficients differ, e.g. at monomial {bad[0]}"
        return True, f"all {len(poly.terms())} coefficients in {names} agree"

    def by_taylor() -> tuple[bool, str]:
        diff = _lhs_minus_rhs(a, b)
        at0 = dict.fromkeys(gens, 0)
        n_checked, bad = 0, []
        for order in range(degree + 2):  # one order beyond the claimed degree: those derivatives must vanish too
            for combo in itertools.combinations_with_replacement(gens, order):
                term = sp.diff(diff, *combo) if combo else diff
                if order <= degree:
                    term = term.subs(at0)
                n_checked += 1
                if simplifier(term) != 0:
                    bad.append(combo)
        if bad:
            return False, f"{len(bad)} of {n_checked} Taylor coefficients differ, e.g. d/d{bad[0]}"
        return True, f"all {n_checked} Taylor coefficients in {names} (order ≤ {degree + 1}) agree"

    if degree is None:
        return Check(f"coefficients in ({names}) agree", by_poly)
    return Check(f"polynomial identity in ({names}), degree ≤ {degree}", by_taylor)


def integral_equals(
    integrand: sp.Expr, var: sp.Symbol, claimed: sp.Expr, *, lower=-sp.oo, upper=sp.oo, method="simplify"
) -> Check:
    """Check ``∫ integrand d var == claimed`` by evaluating the integral with SymPy."""
    simplifier = _SIMPLIFIERS[method]

    def fn() -> tuple[bool, str]:
        value = sp.integrate(integrand, (var, lower, upper))
        if value.has(sp.Integral):
            return False, "SymPy could not evaluate the integral"
        residual = simplifier(value - claimed)
        ok = residual == 0
        return ok, "integral evaluated; residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(f"integrate over {var} then compare", fn)


def limit_equals(expr: sp.Expr, var: sp.Symbol, point, claimed: sp.Expr) -> Check:
    """Check ``lim_{var → point} expr == claimed``."""

    def fn() -> tuple[bool, str]:
        value = sp.limit(expr, var, point)
        residual = sp.simplify(value - claimed)
        ok = residual == 0
        return ok, f"limit = {sp.sstr(value)[:200]}" if ok else f"limit {value} != claimed {claimed}"

    return Check(f"limit {var} -> {point}", fn)


def holds(fn: Callable[[], bool | tuple[bool, str]], description: str) -> Check:
    """A custom SymPy computation returning a bool (or ``(bool, detail)``)."""

    def wrapped() -> tuple[bool, str]:
        out = fn()
        if isinstance(out, tuple):
            return bool(out[0]), str(out[1])
        return bool(out), description

    return Check(description, wrapped)


# --------------------------------------------------------------------------------------------------------
# Steps, results, derivations
# --------------------------------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of a derivation: ``before`` becomes ``after`` because of ``justification``; ``check`` proves it.

    ``before`` may be ``None`` for a step that states a definition or a starting point (its check then
    proves a property of ``after``).  ``relation`` is how the two are displayed (``=`` by default; ``\\geq``
    for inequalities).
    """

    statement: str
    after: sp.Basic
    justification: str
    check: Check
    before: sp.Basic | None = None
    relation: str = "="

    def latex(self) -> str:
        rel = {"=": "=", ">=": r"\geq", "<=": r"\leq", "->": r"\to", "=>": r"\Rightarrow"}.get(
            self.relation, self.relation
        )
        after = _latex(self.after)
        if self.before is None:
            return after
        return f"{_latex(self.before)} {rel} {after}"

    def text(self) -> str:
        after = _text(self.after)
        if self.before is None:
            return after
        return f"{_text(self.before)} {self.relation} {after}"


# How the shared symbol names of the derivations print in LaTeX (the code names stay plain identifiers).
LATEX_NAMES = {
    "alpha_bar": r"\bar\alpha_t",
    "alpha_bar_prev": r"\bar\alpha_{t-1}",
    "alpha": r"\alpha_t",
    "beta": r"\beta_t",
    "sigma2": r"\sigma_t^2",
    "x0": "x_0",
    "xt": "x_t",
    "x_prev": "x_{t-1}",
    "eps": r"\varepsilon",
    "eps_hat": r"\hat\varepsilon",
    "snr": r"\mathrm{SNR}(t)",
    "snr_prev": r"\mathrm{SNR}(t-1)",
    "snr_min": r"\mathrm{SNR}_{\min}",
    "snr_max": r"\mathrm{SNR}_{\max}",
    "var1": r"\sigma_1^2",
    "var2": r"\sigma_2^2",
    "var_q": r"\sigma_q^2",
    "var_p": r"\sigma_p^2",
    "mu_q": r"\mu_q",
    "mu_p": r"\mu_p",
    "err2": r"\|x_0-\hat x_0\|^2",
    "s2": r"s^2",
}


def _latex(e: sp.Basic) -> str:
    if isinstance(e, str):
        return e
    names = {sym: LATEX_NAMES[sym.name] for sym in e.free_symbols if getattr(sym, "name", None) in LATEX_NAMES}
    return sp.latex(e, symbol_names=names)


def _text(e: sp.Basic) -> str:
    return e if isinstance(e, str) else sp.sstr(e)


@dataclass
class Result:
    """An exported result: a SymPy expression with a fixed argument order, lambdified on demand."""

    name: str
    expr: sp.Expr
    args: tuple[sp.Symbol, ...]
    description: str = ""

    def at(self, *values) -> sp.Expr:
        """The expression with its arguments replaced by ``values`` (in :attr:`args` order; SymPy expressions)."""
        if len(values) != len(self.args):
            raise ValueError(
                f"result {self.name!r} takes {len(self.args)} arguments {self.arg_names}, got {len(values)}"
            )
        return self.expr.xreplace(dict(zip(self.args, map(sp.sympify, values))))

    @cached_property
    def numpy(self) -> Callable:
        return sp.lambdify(self.args, self.expr, modules=["numpy", "scipy"])

    @cached_property
    def torch(self) -> Callable:
        # torch.sqrt/log/exp reject Python numbers: evaluate constant subexpressions (sqrt(2), log(pi)) first.
        expr = self.expr.replace(
            lambda e: e.is_number and e.is_real and not e.is_Rational and not e.is_Float,
            lambda e: e.evalf(17),
        )
        return sp.lambdify(self.args, expr, modules="torch")

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(str(a) for a in self.args)


@dataclass
class StepReport:
    step: Step
    checked: bool
    detail: str
    seconds: float


@dataclass
class DerivationReport:
    derivation: Derivation
    steps: list[StepReport]
    seconds: float  # build + checks

    @property
    def ok(self) -> bool:
        return all(s.checked for s in self.steps)

    def to_dict(self) -> dict:
        d = self.derivation
        return {
            "name": d.name,
            "equation": d.equation,
            "title": d.title,
            "guide_section": d.guide_section,
            "seconds": round(self.seconds, 4),
            "ok": self.ok,
            "steps": [
                {
                    "statement": s.step.statement,
                    "text": s.step.text(),
                    "latex": s.step.latex(),
                    "justification": s.step.justification,
                    "check": s.step.check.description,
                    "detail": s.detail,
                    "checked": s.checked,
                    "seconds": round(s.seconds, 4),
                }
                for s in self.steps
            ],
            "results": {
                name: {"args": list(r.arg_names), "text": sp.sstr(r.expr), "latex": sp.latex(r.expr)}
                for name, r in d.results.items()
            },
        }

    def render_text(self, *, latex: bool = False) -> str:
        d = self.derivation
        mark = "✓" if self.ok else "✗"
        lines = [f"{mark} {d.equation} {d.title}  [{d.name}; guide: {d.guide_section}; {self.seconds:.2f} s]"]
        for i, s in enumerate(self.steps, 1):
            m = "✓" if s.checked else "✗"
            lines.append(f"  {m} {i}. {s.step.statement}")
            lines.append(f"       {s.step.latex() if latex else s.step.text()}")
            lines.append(f"       because: {s.step.justification}")
            lines.append(f"       proof:   {s.step.check.description} -- {s.detail}")
        return "\n".join(lines)

    def render_latex(self) -> str:
        """A LaTeX fragment (``align*`` per step) for reports and the docs."""
        d = self.derivation
        out = [f"% {d.equation} {d.title} ({d.name})", r"\begin{enumerate}"]
        for s in self.steps:
            mark = r"\checkmark" if s.checked else r"\times"
            out.append(rf"\item {s.step.statement} (${mark}$)")
            out.append(r"\begin{align*}" + s.step.latex() + r"\end{align*}")
            out.append(rf"\emph{{{s.step.justification}}}")
        out.append(r"\end{enumerate}")
        return "\n".join(out)


@dataclass
class Derivation:
    """A named, ordered list of checked steps plus exported results (see module docstring)."""

    name: str
    equation: str  # "E1" ... "E12" (../shared/DESIGN.md inventory)
    title: str
    guide_section: str
    steps: list[Step] = field(default_factory=list)
    results: dict[str, Result] = field(default_factory=dict)
    build_seconds: float = 0.0

    def step(self, statement: str, after, justification: str, check: Check, *, before=None, relation="="):
        """Append a step (fluent helper used by the derivation modules)."""
        self.steps.append(Step(statement, after, justification, check, before=before, relation=relation))
        return self

    def export(self, name: str, expr: sp.Expr, args: Sequence[sp.Symbol], description: str = "") -> Result:
        missing = sp.sympify(expr).free_symbols - set(args)
        if missing:
            raise ValueError(f"result {name!r} has free symbols not in args: {sorted(map(str, missing))}")
        r = Result(name, sp.sympify(expr), tuple(args), description)
        self.results[name] = r
        return r

    def result(self, name: str) -> Result:
        try:
            return self.results[name]
        except KeyError:
            raise KeyError(f"{self.name} exports no result {name!r}; it has {sorted(self.results)}") from None

    def numpy(self, name: str) -> Callable:
        return self.result(name).numpy

    def torch(self, name: str) -> Callable:
        return self.result(name).torch

    def verify(self) -> DerivationReport:
        reports = []
        for st in self.steps:
            t0 = time.perf_counter()
            ok, detail = st.check.run()
            reports.append(StepReport(st, ok, detail, time.perf_counter() - t0))
        total = self.build_seconds + sum(r.seconds for r in reports)
        return DerivationReport(self, reports, total)
