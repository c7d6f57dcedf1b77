"""A derivation is data: ordered steps, each proven by a SymPy computation.

Every step records a statement in words, the expression *before* and *after* the step, the justification,
and a :class:`Check` -- a SymPy computation (``simplify(a - b) == 0``, an ``integrate``, a comparison of
polynomial coefficients, a limit) that returns ``False`` when the step is wrong.  Nothing is checked at
import time: :meth:`Derivation.verify` runs the checks and times them.

Every check reads the step's after-expression among its arguments (:attr:`Check.args`), so the step can test its
own check: :meth:`Step.self_test` re-runs it on ``after + δ``, ``after·(1 + δ)`` (δ a fresh symbol) and, for a
relation, its reverse, and each must fail (``elbo-lab derive --self-test``).  Inequalities are proven as inequalities
(:func:`convex_minimum` for a one-variable lemma, :func:`nonnegative_parts` for a certificate of non-negative parts,
each a proven lemma's instance).  Steps carry a ``kind`` (computed by SymPy / typed and checked / special case) and,
for a special case, a printed ``scope`` ("T = 3"); a derivation declares its assumptions (:meth:`Derivation.assume`).

A derivation also *exports* its results (:class:`Result`): SymPy expressions with a fixed argument order,
available as ``lambdify``-ed numpy and torch callables; each is the after-expression of a checked step
(:attr:`Result.step`; :meth:`Derivation.unchecked_exports` lists any that is not).  The numeric code of
:mod:`elbo_lab` is tested against these callables; SymPy is the source of truth.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import sympy as sp

__all__ = [
    "DELTA",
    "KINDS",
    "Check",
    "Derivation",
    "DerivationReport",
    "Result",
    "SelfTest",
    "Step",
    "StepReport",
    "Part",
    "coefficients_equal",
    "convex_minimum",
    "equal",
    "holds",
    "integral_equals",
    "is_zero",
    "limit_equals",
    "matches",
    "nonnegative_parts",
    "perturbations",
]


# --------------------------------------------------------------------------------------------------------
# Checks: SymPy computations that prove (or refute) one step
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A SymPy computation proving a step: ``fn(*args)`` returns ``(ok, detail)``; exceptions count as failure.

    ``args`` are the expressions the computation reads.  A step's check must read the step's after-expression
    (the argument structurally equal to it): :meth:`Step.self_test` re-runs the check with that argument
    perturbed (``after + δ``, ``after·(1 + δ)``, a relation reversed) and requires it to fail.  A check whose
    ``args`` do not hold the after-expression cannot depend on it, and the self-test reports it.
    """

    description: str
    fn: Callable[..., tuple[bool, str]]
    args: tuple = ()

    def run(self, args: tuple | None = None) -> tuple[bool, str]:
        try:
            ok, detail = self.fn(*(self.args if args is None else args))
        except Exception as exc:  # a check that cannot be computed has not been proven
            return False, f"{self.description}: raised {type(exc).__name__}: {exc}"
        return bool(ok), detail

    def slots(self, expr) -> list[int]:
        """Indices of the arguments that are ``expr`` (where a step's after-expression enters): the very object if
        it was passed, else those structurally equal to it."""
        same = [i for i, a in enumerate(self.args) if a is expr]
        return same or [i for i, a in enumerate(self.args) if _same(a, expr)]


def _same(a, b) -> bool:
    if isinstance(a, sp.MatrixBase) or isinstance(b, sp.MatrixBase):
        return isinstance(a, sp.MatrixBase) and isinstance(b, sp.MatrixBase) and a.shape == b.shape and a == b
    if isinstance(a, str) or isinstance(b, str):
        return False
    try:
        return isinstance(a, sp.Basic) and isinstance(b, sp.Basic) and a == b
    except Exception:  # noqa: BLE001 -- comparison of exotic objects: not the same
        return False


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

    def fn(e) -> tuple[bool, str]:
        residual = simplifier(sp.sympify(e))
        ok = residual == 0
        return ok, "residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(description or f"{method}(expression) == 0", fn, (expr,))


def equal(a: sp.Basic, b: sp.Basic, *, method: str = "simplify") -> Check:
    """Check ``a == b`` symbolically: ``method(a - b) == 0``."""
    simplifier = _SIMPLIFIERS[method]

    def fn(a, b) -> tuple[bool, str]:
        residual = simplifier(_lhs_minus_rhs(a, b))
        ok = residual == 0
        return ok, "residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(f"{method}(before - after) == 0", fn, (a, b))


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

    def by_poly(a, b) -> tuple[bool, str]:
        diff = sp.expand(_lhs_minus_rhs(a, b))
        poly = sp.Poly(diff, *gens)
        bad = []
        for monom, coeff in poly.terms():
            if simplifier(coeff) != 0:
                bad.append(monom)
        if bad:
            return False, f"{len(bad)} of {len(poly.terms())} coefficients differ, e.g. at monomial {bad[0]}"
        return True, f"all {len(poly.terms())} coefficients in {names} agree"

    def by_taylor(a, b) -> tuple[bool, str]:
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
        return Check(f"coefficients in ({names}) agree", by_poly, (a, b))
    return Check(f"polynomial identity in ({names}), degree ≤ {degree}", by_taylor, (a, b))


def integral_equals(
    integrand: sp.Expr, var: sp.Symbol, claimed: sp.Expr, *, lower=-sp.oo, upper=sp.oo, method="simplify"
) -> Check:
    """Check ``∫ integrand d var == claimed`` by evaluating the integral with SymPy."""
    simplifier = _SIMPLIFIERS[method]

    def fn(integrand, claimed) -> tuple[bool, str]:
        value = sp.integrate(integrand, (var, lower, upper))
        if value.has(sp.Integral):
            return False, "SymPy could not evaluate the integral"
        residual = simplifier(value - claimed)
        ok = residual == 0
        return ok, "integral evaluated; residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(f"integrate over {var} then compare", fn, (integrand, claimed))


def limit_equals(expr: sp.Expr, var: sp.Symbol, point, claimed: sp.Expr) -> Check:
    """Check ``lim_{var → point} expr == claimed``."""

    def fn(expr, claimed) -> tuple[bool, str]:
        value = sp.limit(expr, var, point)
        residual = sp.simplify(value - claimed)
        ok = residual == 0
        return ok, f"limit = {sp.sstr(value)[:200]}" if ok else f"limit {value} != claimed {claimed}"

    return Check(f"limit {var} -> {point}", fn, (expr, claimed))


def holds(fn: Callable[..., bool | tuple[bool, str]], description: str, *args) -> Check:
    """A custom SymPy computation ``fn(*args)`` returning a bool (or ``(bool, detail)``).

    Pass the step's after-expression among ``args`` (and read it in ``fn``): a check that does not read it
    cannot depend on the step, and :meth:`Step.self_test` reports it.
    """

    def wrapped(*a) -> tuple[bool, str]:
        out = fn(*a)
        if isinstance(out, tuple):
            return bool(out[0]), str(out[1])
        return bool(out), description

    return Check(description, wrapped, tuple(args))


def matches(compute: Callable[[], sp.Basic], claimed: sp.Basic, description: str, *, method="simplify") -> Check:
    """Check ``claimed == compute()``: the SymPy computation (integrate, solve, diff, ...) runs *inside* the check,
    so the step's displayed after-expression (``claimed``) is compared with a value computed afresh."""
    simplifier = _SIMPLIFIERS[method]

    def fn(claimed) -> tuple[bool, str]:
        value = compute()
        residual = simplifier(_lhs_minus_rhs(value, claimed))
        ok = residual == 0
        return ok, f"computed {sp.sstr(value)[:120]}; residual = 0" if ok else f"residual = {sp.sstr(residual)[:300]}"

    return Check(description, fn, (claimed,))


# --------------------------------------------------------------------------------------------------------
# Inequalities: lemmas by convexity, relations by a certificate of non-negative parts
# --------------------------------------------------------------------------------------------------------


def _gap(rel: sp.Basic) -> sp.Expr:
    """For ``a ≥ b`` (or ``b ≤ a``) the expression ``a − b`` that the relation claims non-negative."""
    if isinstance(rel, (sp.GreaterThan, sp.StrictGreaterThan)):
        return rel.lhs - rel.rhs
    if isinstance(rel, (sp.LessThan, sp.StrictLessThan)):
        return rel.rhs - rel.lhs
    raise TypeError(f"not an inequality: {rel}")


def convex_minimum(rel: sp.Basic, var: sp.Symbol, description: str | None = None) -> Check:
    """Prove the inequality ``rel`` (``a ≥ b`` or ``a ≤ b``) in one variable: ``f = a − b`` (resp. ``b − a``) has
    ``f'' > 0`` (SymPy's assumptions on ``var`` decide), a single stationary point ``c``, and ``f(c) ≥ 0`` -- so
    ``f ≥ 0`` everywhere, with equality only at ``c``."""

    def fn(rel) -> tuple[bool, str]:
        f = _gap(rel)
        f2 = sp.simplify(sp.diff(f, var, 2))
        if f2.is_positive is not True:
            return False, f"f'' = {f2} is not provably > 0: f need not be convex"
        crit = sp.solve(sp.diff(f, var), var)
        if len(crit) != 1:
            return False, f"stationary points {crit}: expected exactly one"
        fmin = sp.simplify(f.subs(var, crit[0]))
        if fmin.is_nonnegative is not True:
            return False, f"minimum f({crit[0]}) = {fmin} is not provably ≥ 0"
        return True, f"f'' = {f2} > 0; f' = 0 only at {var} = {crit[0]}; min f = {fmin} (equality only there)"

    return Check(description or f"convexity in {var}: f'' > 0, one stationary point, f ≥ 0 there", fn, (rel,))


@dataclass(frozen=True)
class Part:
    """One non-negative part of an inequality's certificate: ``expr`` ≥ 0 because of ``lemma`` -- a proven relation
    ``a ≥ b`` (or ``a ≤ b``) -- instantiated by ``subs``: ``expr == c·(a − b)[subs]`` for a number ``c > 0``, every
    substituted value inside the lemma variable's domain (positive where the variable is positive).  With no lemma,
    SymPy's assumptions must decide ``expr ≥ 0`` (a square over a positive number).  ``expr`` may be a ``Sum`` of
    such terms (each summand certified the same way)."""

    expr: sp.Expr
    lemma: sp.Basic | None = None
    subs: tuple = ()
    name: str = ""

    def certify(self) -> str | None:
        term = self.expr
        scale, sums = sp.Integer(1), [f for f in sp.Mul.make_args(term) if isinstance(f, sp.Sum)]
        if len(sums) == 1:  # c·Σ_i t_i with c > 0: certify the summand t_i
            scale = sp.Mul(*[f for f in sp.Mul.make_args(term) if f is not sums[0]])
            if scale.is_positive is not True:
                return f"the factor {scale} in front of the sum is not provably > 0"
            term = sums[0].function
        if self.lemma is None:
            return None if sp.simplify(term).is_nonnegative is True else f"{term} is not provably ≥ 0"
        subs = dict(self.subs)
        for var, value in subs.items():
            if var.is_positive and sp.sympify(value).is_positive is not True:
                return f"{value} is not provably > 0 (the domain of {var} in {self.name or 'the lemma'})"
        instance = _gap(self.lemma).xreplace(subs)
        if _residual(term - instance) == 0:
            return None
        ratio = sp.simplify(sp.expand_log(term / instance, force=True))
        if not (ratio.is_number and ratio.is_positive):
            return f"{term} is not a positive multiple of {self.name or 'the lemma'} at {subs}"
        return None


def _residual(e: sp.Expr) -> sp.Expr:
    """``e`` simplified with logs split and sums evaluated, their bound indices renamed alike (0 if an identity)."""
    from .algebra import log_residual

    e = sp.sympify(e)
    if not e.has(sp.Sum):
        try:
            if log_residual(e) is None:  # exact route for sums of logs and rational functions (fast)
                return sp.Integer(0)
        except Exception:  # noqa: BLE001 -- not of that shape: fall back to simplify
            pass
    e = sp.expand(sp.expand_log(sp.expand(e), force=True))
    if e.has(sp.Sum):
        e = e.doit()
        dummies = [lim[0] for s_ in e.atoms(sp.Sum) for lim in s_.limits]
        if dummies:  # bound indices renamed alike, so that Σ_i w_i and Σ_j w_j are one expression
            e = e.xreplace(dict.fromkeys(dummies[1:], dummies[0]))
        # a sum left over is a positive quantity here (sums of positive weights) or cancels: try the exact route
        # with each sum as a symbol (positive when SymPy says so) before simplify
        atoms = {s_: sp.Dummy(positive=True) if s_.is_positive else sp.Dummy() for s_ in e.atoms(sp.Sum)}
        flat = sp.expand(sp.expand_log(e.xreplace(atoms), force=True))
        try:
            if log_residual(flat) is None:
                return sp.Integer(0)
        except Exception:  # noqa: BLE001 -- not of that shape
            pass
    return sp.simplify(e)


def nonnegative_parts(rel: sp.Basic, parts: Sequence[Part], *, description: str | None = None) -> Check:
    """Prove the inequality ``rel`` from a certificate: ``a − b == Σ parts`` (an identity, logs expanded), and each
    part ≥ 0 (:meth:`Part.certify`: an instance of a proven lemma, or a square).  Reversed, or shifted by δ, the
    identity fails."""

    def fn(rel) -> tuple[bool, str]:
        f = _gap(rel)
        total = sp.Add(*[p.expr for p in parts])
        residual = _residual(f - total)
        if residual != 0:
            return False, f"a − b ≠ Σ parts: residual {sp.sstr(residual)[:200]}"
        for p in parts:
            why = p.certify()
            if why is not None:
                return False, why
        names = ", ".join(p.name or "square" for p in parts)
        return True, f"a − b = Σ of {len(parts)} non-negative parts ({names})"

    return Check(description or "a − b as a sum of parts, each ≥ 0 by a proven lemma", fn, (rel,))


# --------------------------------------------------------------------------------------------------------
# Steps, results, derivations
# --------------------------------------------------------------------------------------------------------


DELTA = sp.Symbol("delta", real=True)  # the fresh symbol δ of the self-test perturbations

_REVERSE = {sp.GreaterThan: sp.LessThan, sp.LessThan: sp.GreaterThan, sp.StrictGreaterThan: sp.StrictLessThan}
_REVERSE[sp.StrictLessThan] = sp.StrictGreaterThan
_REL_TEXT = {sp.GreaterThan: "≥", sp.LessThan: "≤", sp.StrictGreaterThan: ">", sp.StrictLessThan: "<"}
_REL_TEXT[sp.Equality] = "="


def perturbations(after) -> list[tuple[str, object]]:
    """The wrong versions of a step's after-expression its check must refuse: ``after + δ``, ``after·(1 + δ)`` (δ a
    fresh real symbol); for a relation ``a ≥ b`` its reverse ``a ≤ b`` and ``a ≥ b + δ``; for ``a = b``, ``a = b + δ``
    and ``a = b·(1 + δ)``.  A perturbation identical to ``after`` (``0·(1 + δ)``) is left out."""
    out: list[tuple[str, object]] = []
    if type(after) in _REVERSE:
        rel = type(after)
        out = [
            ("relation reversed", _REVERSE[rel](after.lhs, after.rhs, evaluate=False)),
            ("rhs + δ", rel(after.lhs, after.rhs + DELTA, evaluate=False)),
        ]
    elif isinstance(after, sp.Equality):
        out = [
            ("rhs + δ", sp.Eq(after.lhs, after.rhs + DELTA, evaluate=False)),
            ("rhs·(1 + δ)", sp.Eq(after.lhs, after.rhs * (1 + DELTA), evaluate=False)),
        ]
    elif isinstance(after, sp.Tuple):  # each entry perturbed in turn (its first perturbation)
        for i, e in enumerate(after):
            for name, p in perturbations(e)[:1]:
                out.append((f"entry {i + 1}: {name}", sp.Tuple(*after[:i], p, *after[i + 1 :])))
    elif isinstance(after, sp.MatrixBase):
        out = [("after + δ", after.applyfunc(lambda e: e + DELTA)), ("after·(1 + δ)", after * (1 + DELTA))]
    elif isinstance(after, sp.Basic):
        out = [("after + δ", after + DELTA), ("after·(1 + δ)", after * (1 + DELTA))]
    return [(name, p) for name, p in out if not _same(p, after)]


@dataclass
class SelfTest:
    """The outcome of re-running one step's check on perturbed after-expressions."""

    step: Step
    killed: list[str]  # perturbations the check refused (as it must)
    survived: list[str]  # perturbations the check accepted: a defect (or "check does not read the after-expression")

    @property
    def ok(self) -> bool:
        return not self.survived


# How a step's after-expression came about (counted in the closing report, printed with ``--self-test``).
KINDS = {
    "computed": "computed by SymPy (integrated, solved, expanded, differentiated)",
    "typed": "a typed form (claim or rearrangement) checked by an identity or a proof",
    "special": "a special case (its scope printed: T = 3, D = 3, ...)",
}


@dataclass
class Step:
    """One step of a derivation: ``before`` becomes ``after`` because of ``justification``; ``check`` proves it.

    ``before`` may be ``None`` for a step that states a definition, a lemma or a starting point (its check then
    proves a property of ``after``).  A relation (``a ≥ b``) is an ``after`` that is a SymPy relational (the check
    proves it; reversed, it must fail) or, with ``before``, the ``relation`` between before and after (``=`` by
    default; ``<=``, ``>=``, ``->``).  ``scope`` tags a special case ("T = 3", "D = 3", "for f = z²"); ``kind`` says
    how the after-expression came about (:data:`KINDS`).
    """

    statement: str
    after: sp.Basic
    justification: str
    check: Check
    before: sp.Basic | None = None
    relation: str = "="
    scope: str | None = None
    kind: str = "typed"

    def __post_init__(self) -> None:
        if self.scope is not None:
            self.kind = "special"
        if self.kind not in KINDS:
            raise ValueError(f"unknown step kind {self.kind!r}; one of {sorted(KINDS)}")

    def _relation(self) -> str:
        # between two equations (or tuples of them) "=" would be false as written: they are equivalent
        def is_eq(e):
            return isinstance(e, sp.Equality) or (
                isinstance(e, sp.Tuple) and any(isinstance(a, sp.Equality) for a in e)
            )

        if self.relation == "=" and is_eq(self.before) and is_eq(self.after):
            return "<=>"
        return self.relation

    def latex(self) -> str:
        rel = {"=": "=", ">=": r"\geq", "<=": r"\leq", "->": r"\to", "=>": r"\Rightarrow", "<=>": r"\iff"}.get(
            self._relation(), self._relation()
        )
        after = _latex(self.after)
        if self.before is None:
            return after
        return f"{_latex(self.before)} {rel} {after}"

    def text(self) -> str:
        after = _text(self.after)
        if self.before is None:
            return after
        rel = {">=": "≥", "<=": "≤", "->": "→", "=>": "⇒", "<=>": "⇔"}.get(self._relation(), self._relation())
        return f"{_text(self.before)} {rel} {after}"

    def self_test(self) -> SelfTest:
        """Re-run the check with the after-expression perturbed (:func:`perturbations`); each must fail."""
        slots = self.check.slots(self.after)
        if not slots:
            return SelfTest(self, [], ["check does not read the after-expression"])
        killed, survived = [], []
        wrongs = perturbations(self.after)
        if not wrongs:
            return SelfTest(self, [], ["no perturbation applies to the after-expression"])
        for name, wrong in wrongs:
            args = list(self.check.args)
            for i in slots:
                args[i] = wrong
            ok, _ = self.check.run(tuple(args))
            (survived if ok else killed).append(name)
        return SelfTest(self, killed, survived)


# How the shared symbol names of the derivations print in LaTeX (the code names stay plain identifiers).
LATEX_NAMES = {
    "alpha_bar": r"\bar\alpha_t",
    "alpha_bar_prev": r"\bar\alpha_{t-1}",
    "mu1": r"\mu_1",
    "mu2": r"\mu_2",
    "mu_theta": r"\mu_\theta",
    "delta": r"\delta",
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


# ... and in text (unicode; the code names stay plain identifiers).
TEXT_NAMES = {
    "alpha_bar": "ᾱ_t",
    "alpha_bar_prev": "ᾱ_{t−1}",
    "alpha": "α_t",
    "beta": "β_t",
    "sigma2": "σ_t²",
    "x0": "x_0",
    "xt": "x_t",
    "x_prev": "x_{t−1}",
    "eps": "ε",
    "eps_hat": "ε̂",
    "snr": "SNR(t)",
    "snr_prev": "SNR(t−1)",
    "snr_min": "SNR_min",
    "snr_max": "SNR_max",
    "var1": "σ₁²",
    "var2": "σ₂²",
    "mu1": "μ₁",
    "mu2": "μ₂",
    "mu": "μ",
    "sigma": "σ",
    "var_q": "σ_q²",
    "var_p": "σ_p²",
    "mu_q": "μ_q",
    "mu_p": "μ_p",
    "mu_theta": "μ_θ",
    "err2": "‖x_0 − x̂_0‖²",
    "s2": "s²",
    "delta": "δ",
}

_ABP, _BETA = sp.Symbol("alpha_bar_prev", positive=True), sp.Symbol("beta", positive=True)
_AB, _ALPHA = sp.Symbol("alpha_bar", positive=True), sp.Symbol("alpha", positive=True)


def display(e):
    """An equal form of ``e`` for display only: 1 − ᾱ_{t−1}(1 − β_t) (in whatever expanded form) shown as 1 − ᾱ_t,
    √ᾱ_{t−1}·√(1 − β_t) as √ᾱ_t, α_t ᾱ_{t−1} as ᾱ_t (ᾱ_t = α_t ᾱ_{t−1}, α_t = 1 − β_t; the E5-E11 conventions)."""
    if not isinstance(e, sp.Basic) or isinstance(e, sp.MatrixBase):
        return e
    syms = e.free_symbols
    if _ABP not in syms or not ({_BETA, _ALPHA} & syms):
        return e

    def shorter(a):
        cand = sp.expand(a.xreplace({_BETA: 1 - _ALPHA})).subs(_ALPHA * _ABP, _AB)
        if _ALPHA in cand.free_symbols and _ALPHA not in a.free_symbols:
            return a
        return cand if sp.count_ops(cand) < sp.count_ops(a) else a

    try:
        e = e.subs({sp.sqrt(_ABP) * sp.sqrt(1 - _BETA): sp.sqrt(_AB), _ALPHA * _ABP: _AB})
        return e.replace(lambda x: isinstance(x, sp.Add) and x.has(_ABP) and x.has(_BETA, _ALPHA), shorter)
    except Exception:  # noqa: BLE001 -- display only: fall back to the expression as it is
        return e


class _TextPrinter(sp.printing.str.StrPrinter):
    """``sstr`` with unicode names (:data:`TEXT_NAMES`), √ for square roots, π, ≥/≤ for relations."""

    def _print_Symbol(self, expr):
        return TEXT_NAMES.get(expr.name, expr.name)

    def _print_Pi(self, expr):
        return "π"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            base = self._print(expr.base)
            return f"√{base}" if expr.base.is_Atom else f"√({base})"
        return super()._print_Pow(expr, rational=rational)

    def _print_Relational(self, expr):
        rel = _REL_TEXT.get(type(expr), expr.rel_op)
        return f"{self._print(expr.lhs)} {rel} {self._print(expr.rhs)}"

    def _print_Sum(self, expr):
        (var, lo, hi), *_ = expr.limits
        body = self._print(expr.function)
        body = f"({body})" if isinstance(expr.function, sp.Add) else body
        return f"Σ_{{{self._print(var)}={self._print(lo)}}}^{{{self._print(hi)}}} {body}"

    def _print_Tuple(self, expr):
        return "(" + ", ".join(self._print(a) for a in expr) + ")"


_TEXT = _TextPrinter()


def _latex(e: sp.Basic) -> str:
    if isinstance(e, str):
        return e
    e = display(e)
    if not isinstance(e, sp.Basic):
        return sp.latex(e)
    symbols = e.atoms(sp.Symbol)  # bound variables too (∫ ... dε)
    names = {sym: LATEX_NAMES[sym.name] for sym in symbols if sym.name in LATEX_NAMES}
    names |= {sym: sym.name for sym in symbols if sym.name.startswith("\\")}  # names written in LaTeX already
    return sp.latex(e, symbol_names=names)


def _text(e: sp.Basic) -> str:
    if isinstance(e, str):
        return e
    return _TEXT.doprint(display(e))


@dataclass
class Result:
    """An exported result: a SymPy expression with a fixed argument order, lambdified on demand."""

    name: str
    expr: sp.Expr
    args: tuple[sp.Symbol, ...]
    description: str = ""
    step: int | None = None  # the (1-based) step whose after-expression this is

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
            "assumptions": list(d.assumptions),
            "seconds": round(self.seconds, 4),
            "ok": self.ok,
            "steps": [
                {
                    "statement": s.step.statement,
                    "text": s.step.text(),
                    "latex": s.step.latex(),
                    "justification": s.step.justification,
                    "kind": s.step.kind,
                    "scope": s.step.scope,
                    "check": s.step.check.description,
                    "detail": s.detail,
                    "checked": s.checked,
                    "seconds": round(s.seconds, 4),
                }
                for s in self.steps
            ],
            "results": {
                name: {"args": list(r.arg_names), "step": r.step, "text": _text(r.expr), "latex": _latex(r.expr)}
                for name, r in d.results.items()
            },
        }

    def render_text(self, *, latex: bool = False) -> str:
        d = self.derivation
        mark = "✓" if self.ok else "✗"
        lines = [f"{mark} {d.equation} {d.title}  [{d.name}; guide: {d.guide_section}; {self.seconds:.2f} s]"]
        if d.assumptions:
            lines.append(f"  assumes: {'; '.join(d.assumptions)}")
        for i, s in enumerate(self.steps, 1):
            m = "✓" if s.checked else "✗"
            tag = f"  [special case: {s.step.scope}]" if s.step.scope else ""
            lines.append(f"  {m} {i}. {s.step.statement}{tag}")
            lines.append(f"       {s.step.latex() if latex else s.step.text()}")
            lines.append(f"       because: {s.step.justification}")
            lines.append(f"       proof:   {s.step.check.description} -- {s.detail}")
        return "\n".join(lines)

    def render_latex(self) -> str:
        """A LaTeX fragment (``align*`` per step) for reports and the docs."""
        d = self.derivation
        out = [f"% {d.equation} {d.title} ({d.name})"]
        if d.assumptions:
            out.append(r"\emph{Assumptions:} " + "; ".join(d.assumptions))
        out.append(r"\begin{enumerate}")
        for s in self.steps:
            mark = r"\checkmark" if s.checked else r"\times"
            tag = f" [special case: {s.step.scope}]" if s.step.scope else ""
            out.append(rf"\item {s.step.statement}{tag} (${mark}$)")
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
    assumptions: list[str] = field(default_factory=list)

    def assume(self, *statements: str) -> Derivation:
        """Declare assumptions (printed with the derivation): "0 < β_t < 1", "σ² > 0", ..."""
        self.assumptions.extend(statements)
        return self

    def step(
        self,
        statement: str,
        after,
        justification: str,
        check: Check,
        *,
        before=None,
        relation="=",
        scope: str | None = None,
        kind: str = "typed",
    ):
        """Append a step (fluent helper used by the derivation modules)."""
        self.steps.append(
            Step(statement, after, justification, check, before=before, relation=relation, scope=scope, kind=kind)
        )
        return self

    def export(self, name: str, expr: sp.Expr, args: Sequence[sp.Symbol], description: str = "") -> Result:
        """Export ``expr``, which should be the after-expression of one of the steps (or the right-hand side of an
        equation, or an entry of a tuple, that is one): :attr:`Result.step` records which.  An export that is no
        step's after-expression is listed by :meth:`unchecked_exports` and fails the self-test."""
        expr = sp.sympify(expr)
        missing = expr.free_symbols - set(args)
        if missing:
            raise ValueError(f"result {name!r} has free symbols not in args: {sorted(map(str, missing))}")
        index = self._step_of(expr)  # None: exported from outside the steps (reported by the self-test)
        r = Result(name, expr, tuple(args), description, step=None if index is None else index + 1)
        self.results[name] = r
        return r

    def _step_of(self, expr) -> int | None:
        for i in range(len(self.steps) - 1, -1, -1):
            after = self.steps[i].after
            if _same(after, expr) or (isinstance(after, sp.Equality) and _same(after.rhs, expr)):
                return i
            if isinstance(after, sp.Tuple) and any(
                _same(e, expr) or (isinstance(e, sp.Equality) and _same(e.rhs, expr)) for e in after
            ):
                return i
        return None

    def self_test(self) -> list[SelfTest]:
        """Every step's check re-run on perturbed after-expressions (see :meth:`Step.self_test`)."""
        return [st.self_test() for st in self.steps]

    def unchecked_exports(self) -> list[str]:
        """Names of the exported results that are not the after-expression of a step (each one a defect)."""
        return [name for name, r in self.results.items() if r.step is None]

    def counts(self) -> dict[str, int]:
        """Steps per kind (:data:`KINDS`)."""
        out = dict.fromkeys(KINDS, 0)
        for st in self.steps:
            out[st.kind] += 1
        return out

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
