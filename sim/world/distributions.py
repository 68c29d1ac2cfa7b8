"""Duration distributions for the scenario: latencies, up-times and outage lengths.

Every distribution is a small frozen pydantic model tagged by ``dist`` and offers the
same contract:

* ``ppf(u)``: the inverse CDF, vectorised over a numpy array of uniforms in [0, 1).
  The simulator draws uniforms from keyed generators and maps them through ``ppf``
  (inverse-transform sampling), so a distribution never owns randomness and two
  scenarios that differ only in a distribution's parameters still see the same
  uniforms (common random numbers). ``ppf`` calls scipy.special once per batch;
  it is never meant to be called per scalar in a hot loop.
* ``mean()``: the exact mean in seconds.
* ``sample(rng, size)``: ``ppf(rng.random(size))``.
* ``sample_residual(rng, size)``: draws from the *equilibrium residual* (forward
  recurrence time) of a renewal process with this inter-event distribution, i.e. the
  time left in the period that covers a random instant. A renewal timeline started
  with it is stationary from t = 0 (see :mod:`sim.world.providers`).

All values are seconds and non-negative. Parameters are validated on construction;
errors raise pydantic ``ValidationError`` whose messages name the bad value (the
scenario loader turns them into one-line :class:`~sim.errors.ScenarioError`).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    PrivateAttr,
    Tag,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError
from scipy import special

__all__ = [
    "DIST_TAGS",
    "Distribution",
    "Empirical",
    "Exponential",
    "Fixed",
    "Gamma",
    "Lognormal",
    "LognormalMixture",
    "NonNegativeFloat",
    "PositiveFloat",
    "Probability",
    "Weibull",
    "distribution_union",
]


# --------------------------------------------------------------------------- checks
def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise PydanticCustomError(
            "finite_number", "expected a finite number, got {value}", {"value": v}
        )
    return v


def _positive(v: float) -> float:
    if not (math.isfinite(v) and v > 0):
        raise PydanticCustomError(
            "positive_number", "expected a positive number, got {value}", {"value": v}
        )
    return v


def _non_negative(v: float) -> float:
    if not (math.isfinite(v) and v >= 0):
        raise PydanticCustomError(
            "non_negative_number", "expected a number >= 0, got {value}", {"value": v}
        )
    return v


def _probability(v: float) -> float:
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise PydanticCustomError(
            "probability", "expected a probability in [0, 1], got {value}", {"value": v}
        )
    return v


# The checks run as after-validators (so the messages are ours, naming the value);
# WithJsonSchema puts the same bounds into the published JSON Schema.
#: A finite float > 0 (seconds, shapes, rates).
PositiveFloat = Annotated[
    float,
    AfterValidator(_positive),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0}),
]
#: A finite float >= 0.
NonNegativeFloat = Annotated[
    float, AfterValidator(_non_negative), WithJsonSchema({"type": "number", "minimum": 0})
]
#: A float in [0, 1].
Probability = Annotated[
    float,
    AfterValidator(_probability),
    WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1}),
]
#: Any finite float (e.g. the log-scale ``mu`` of a lognormal, which may be negative).
FiniteFloat = Annotated[float, AfterValidator(_finite)]

# Standard-normal quantiles used to turn a (median, pXX) pair into a lognormal sigma.
_Z = {
    "p90_s": float(special.ndtri(0.90)),
    "p95_s": float(special.ndtri(0.95)),
    "p99_s": float(special.ndtri(0.99)),
}


class _Dist(BaseModel):
    """Base class: the contract every distribution implements (see module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        """Inverse CDF at ``u`` (float array in [0, 1)); same shape, float64 seconds."""
        raise NotImplementedError

    def mean(self) -> float:
        """The exact mean in seconds."""
        raise NotImplementedError

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws from the length-biased law, density x f(x) / mean."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` independent draws by inverse transform of ``rng.random``."""
        return self.ppf(rng.random(size))

    def sample_residual(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draws of the equilibrium residual life: ``V * L`` with ``L`` length-biased and
        ``V`` uniform, whose density is ``(1 - F(x)) / mean`` (renewal theory)."""
        lengths = self._length_biased(rng, size)
        return rng.random(size) * lengths


# ---------------------------------------------------------------------- lognormal
class Lognormal(_Dist):
    """Lognormal: ``log X ~ Normal(mu, sigma)``.

    Give exactly one *location* (``mu``, ``median_s`` or ``mean_s``) and exactly one
    *shape* (``sigma``, or one upper quantile ``p90_s`` / ``p95_s`` / ``p99_s``). A
    quantile needs ``mu`` or ``median_s`` (with ``mean_s`` the pair has two solutions)
    and must exceed the median. The resolved ``mu``/``sigma`` are :attr:`mu_` and
    :attr:`sigma_`.
    """

    dist: Literal["lognormal"] = "lognormal"
    mu: FiniteFloat | None = None
    sigma: PositiveFloat | None = None
    median_s: PositiveFloat | None = None
    mean_s: PositiveFloat | None = None
    p90_s: PositiveFloat | None = None
    p95_s: PositiveFloat | None = None
    p99_s: PositiveFloat | None = None

    _mu: float = PrivateAttr(default=0.0)
    _sigma: float = PrivateAttr(default=1.0)

    @model_validator(mode="after")
    def _resolve(self) -> Lognormal:
        locs = [k for k in ("mu", "median_s", "mean_s") if getattr(self, k) is not None]
        shapes = [k for k in ("sigma", "p90_s", "p95_s", "p99_s") if getattr(self, k) is not None]
        if len(locs) != 1 or len(shapes) != 1:
            raise PydanticCustomError(
                "lognormal_params",
                "lognormal needs exactly one of mu, median_s, mean_s and exactly one of "
                "sigma, p90_s, p95_s, p99_s; got {given}",
                {"given": ", ".join(locs + shapes) or "none"},
            )
        loc, shape = locs[0], shapes[0]
        if shape == "sigma":
            sigma = float(self.sigma)  # type: ignore[arg-type]
            if loc == "mu":
                mu = float(self.mu)  # type: ignore[arg-type]
            elif loc == "median_s":
                mu = math.log(self.median_s)  # type: ignore[arg-type]
            else:  # mean = exp(mu + sigma^2 / 2)
                mu = math.log(self.mean_s) - 0.5 * sigma * sigma  # type: ignore[arg-type]
        else:
            if loc == "mean_s":
                raise PydanticCustomError(
                    "lognormal_params",
                    "lognormal: {shape} needs median_s or mu, not mean_s (use sigma with mean_s)",
                    {"shape": shape},
                )
            mu = float(self.mu) if loc == "mu" else math.log(self.median_s)  # type: ignore[arg-type]
            q = float(getattr(self, shape))
            if not math.log(q) > mu:
                raise PydanticCustomError(
                    "lognormal_params",
                    "lognormal: {shape} must exceed the median {median}, got {value}",
                    {"shape": shape, "median": math.exp(mu), "value": q},
                )
            sigma = (math.log(q) - mu) / _Z[shape]
        self._mu, self._sigma = mu, sigma
        return self

    @property
    def mu_(self) -> float:
        """The resolved log-scale location."""
        return self._mu

    @property
    def sigma_(self) -> float:
        """The resolved log-scale standard deviation."""
        return self._sigma

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return np.exp(self._mu + self._sigma * special.ndtri(np.asarray(u, dtype=float)))

    def mean(self) -> float:
        return math.exp(self._mu + 0.5 * self._sigma**2)

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # x f(x) of a lognormal is again lognormal, with mu shifted by sigma^2.
        return np.exp(self._mu + self._sigma**2 + self._sigma * rng.standard_normal(size))


# -------------------------------------------------------------------------- gamma
class Gamma(_Dist):
    """Gamma with ``shape`` k and either ``scale_s`` (theta) or ``mean_s`` (= k * theta)."""

    dist: Literal["gamma"] = "gamma"
    shape: PositiveFloat
    scale_s: PositiveFloat | None = None
    mean_s: PositiveFloat | None = None

    @model_validator(mode="after")
    def _one_scale(self) -> Gamma:
        if (self.scale_s is None) == (self.mean_s is None):
            raise PydanticCustomError(
                "gamma_params", "gamma needs exactly one of scale_s, mean_s", {}
            )
        return self

    @property
    def scale_(self) -> float:
        """The resolved scale theta in seconds."""
        return self.scale_s if self.scale_s is not None else self.mean_s / self.shape  # type: ignore[operator]

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self.scale_ * special.gammaincinv(self.shape, np.asarray(u, dtype=float))

    def mean(self) -> float:
        return self.shape * self.scale_

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # x f(x) of Gamma(k, theta) is Gamma(k + 1, theta).
        return rng.gamma(self.shape + 1.0, self.scale_, size)


# ------------------------------------------------------------------------ weibull
class Weibull(_Dist):
    """Weibull with ``shape`` k and ``scale_s`` lambda: ``F(x) = 1 - exp(-(x/lambda)^k)``."""

    dist: Literal["weibull"] = "weibull"
    shape: PositiveFloat
    scale_s: PositiveFloat

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return self.scale_s * (-np.log1p(-np.asarray(u, dtype=float))) ** (1.0 / self.shape)

    def mean(self) -> float:
        return self.scale_s * math.gamma(1.0 + 1.0 / self.shape)

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # With Y = (X/lambda)^k, the length-biased Y has density y^(1/k) e^-y: Gamma(1 + 1/k).
        return self.scale_s * rng.gamma(1.0 + 1.0 / self.shape, 1.0, size) ** (1.0 / self.shape)


# -------------------------------------------------------------------- exponential
class Exponential(_Dist):
    """Exponential with mean ``mean_s`` (memoryless: its residual is itself)."""

    dist: Literal["exponential"] = "exponential"
    mean_s: PositiveFloat

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return -self.mean_s * np.log1p(-np.asarray(u, dtype=float))

    def mean(self) -> float:
        return self.mean_s

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return rng.gamma(2.0, self.mean_s, size)


# ---------------------------------------------------------------------- empirical
class Empirical(_Dist):
    """The distribution of a list of observed values (``samples_s``).

    The quantile function interpolates linearly between the sorted samples at
    positions ``0, 1/(n-1), ..., 1`` (numpy's default "linear" quantile), so draws
    range continuously over [min, max]; a single sample is a point mass.
    """

    dist: Literal["empirical"] = "empirical"
    samples_s: list[NonNegativeFloat]

    _sorted: np.ndarray = PrivateAttr()
    _grid: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _prepare(self) -> Empirical:
        if not self.samples_s:
            raise PydanticCustomError(
                "empirical_empty", "empirical needs at least one sample in samples_s", {}
            )
        self._sorted = np.sort(np.asarray(self.samples_s, dtype=float))
        self._grid = np.arange(len(self._sorted), dtype=float)
        return self

    def ppf(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        n = len(self._sorted)
        if n == 1:
            return np.full(u.shape, self._sorted[0])
        return np.interp(u * (n - 1), self._grid, self._sorted)

    def mean(self) -> float:
        x = self._sorted
        if len(x) == 1:
            return float(x[0])
        # Mean of the piecewise-linear quantile function: the trapezoid rule on the grid.
        return float((x[:-1] + x[1:]).sum() / (2.0 * (len(x) - 1)))

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        x = self._sorted
        if len(x) == 1 or x[-1] == x[0]:
            return np.full(size, float(x[0]))
        # The law is an equal-weight mixture of uniforms on [x_i, x_i+1]. Length biasing
        # reweights segment i by its mean (x_i + x_i+1)/2 and, inside it, gives density
        # proportional to x, whose inverse CDF is sqrt(a^2 + v (b^2 - a^2)).
        a, b = x[:-1], x[1:]
        w = a + b
        seg = rng.choice(len(a), size=size, p=w / w.sum())
        v = rng.random(size)
        return np.sqrt(a[seg] ** 2 + v * (b[seg] ** 2 - a[seg] ** 2))


# -------------------------------------------------------------- lognormal mixture
#: Iteration cap of the mixture's inverse CDF (safeguarded Newton on the log scale:
#: about 6 steps reach a double's precision; bisection, the fallback, halves a
#: bracket at most ~40 log units wide, so 100 steps always end).
_MIXTURE_MAX_STEPS = 100
_SQRT_2PI = math.sqrt(2.0 * math.pi)
#: How far a weight sum may stray from 1 (a fitted mixture is written to 4 digits).
_WEIGHT_SUM_SLACK = 1e-3


class LognormalMixture(_Dist):
    """A finite mixture of lognormals: with probability ``weights[i]``, ``log X ~
    Normal(mu[i], sigma[i])``.

    ``weights``, ``mu`` and ``sigma`` are lists of one length (1 to 5 components);
    the weights are positive and sum to 1 (within 0.001: they are normalised). This is
    what ``sim calibrate`` writes for a multi-modal latency (queueing behind one, two,
    three requests; a cache hit or miss), in place of a long list of quantiles.

    ``ppf`` inverts the CDF numerically (safeguarded Newton on the log scale, to a
    double's precision), so one uniform gives one draw, which depends on that uniform
    alone: the mixture takes part in the world's common random numbers exactly as a
    one-parameter family does.
    """

    dist: Literal["lognormal_mixture"] = "lognormal_mixture"
    weights: list[PositiveFloat]
    mu: list[FiniteFloat]
    sigma: list[PositiveFloat]

    _w: np.ndarray = PrivateAttr()
    _mu: np.ndarray = PrivateAttr()
    _s: np.ndarray = PrivateAttr()

    @model_validator(mode="after")
    def _check(self) -> LognormalMixture:
        k = len(self.weights)
        if not (1 <= k <= 5 and len(self.mu) == k and len(self.sigma) == k):
            raise PydanticCustomError(
                "mixture_params",
                "lognormal_mixture needs weights, mu and sigma of one length from 1 to 5; "
                "got {lengths}",
                {"lengths": f"{k}, {len(self.mu)} and {len(self.sigma)}"},
            )
        total = math.fsum(self.weights)
        if abs(total - 1.0) > _WEIGHT_SUM_SLACK:
            raise PydanticCustomError(
                "mixture_params",
                "lognormal_mixture: weights must sum to 1, got {total}",
                {"total": round(total, 6)},
            )
        self._w = np.asarray(self.weights, dtype=float) / total
        self._mu = np.asarray(self.mu, dtype=float)
        self._s = np.asarray(self.sigma, dtype=float)
        return self

    def cdf(self, x: np.ndarray) -> np.ndarray:
        """``P(X <= x)`` (0 at and below 0), vectorised."""
        x = np.asarray(x, dtype=float)
        lx = np.log(np.maximum(x, 1e-300))[..., None]
        out = (self._w * special.ndtr((lx - self._mu) / self._s)).sum(axis=-1)
        return np.where(x > 0, out, 0.0)

    def ppf(self, u: np.ndarray) -> np.ndarray:
        u = np.asarray(u, dtype=float)
        shape = u.shape
        u = u.ravel()
        # The answer's log lies between the lowest and the highest component quantile
        # at u (the mixture CDF is a weighted mean of the components' CDFs).
        z = special.ndtri(np.clip(u, 1e-300, 1.0 - 1e-16))[:, None]
        comp = self._mu + self._s * z
        lo, hi = comp.min(axis=1), comp.max(axis=1)
        # Sums over components with numpy's reductions, never a matrix product: BLAS
        # may sum in another order for another batch size, and a draw must not depend
        # on its batch.
        y = (comp * self._w).sum(axis=1)
        # Safeguarded Newton: a step that leaves the bracket bisects it instead (the
        # density can be ~0 between modes). Each value stops once it has converged and
        # is never touched again, so a draw depends on its own uniform only, not on the
        # batch it came in (the world's common random numbers need that).
        active = np.flatnonzero(u > 0)
        for _ in range(_MIXTURE_MAX_STEPS):
            if active.size == 0:
                break
            ya = y[active]
            za = (ya[:, None] - self._mu) / self._s
            f = (special.ndtr(za) * self._w).sum(axis=1) - u[active]
            dens = (np.exp(-0.5 * za * za) * (self._w / self._s)).sum(axis=1) / _SQRT_2PI
            below = f < 0
            lo[active] = np.where(below, ya, lo[active])
            hi[active] = np.where(below, hi[active], ya)
            la, ha = lo[active], hi[active]
            with np.errstate(divide="ignore", invalid="ignore"):
                step = ya - f / dens
            bad = ~((step >= la) & (step <= ha))
            hit = f == 0  # exactly there: stay (the bracket's edge is ya itself)
            new = np.where(hit, ya, np.where(bad, 0.5 * (la + ha), step))
            y[active] = new
            done = hit | (np.abs(new - ya) <= 4e-16 * np.maximum(np.abs(ya), 1.0))
            active = active[~done]
        out = np.where(u > 0, np.exp(y), 0.0)
        return out.reshape(shape)

    def mean(self) -> float:
        return float((self._w * np.exp(self._mu + 0.5 * self._s**2)).sum())

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        # x f(x) / mean is again a lognormal mixture: each component's mu shifted by
        # sigma^2, its weight scaled by the component's mean.
        m = self._w * np.exp(self._mu + 0.5 * self._s**2)
        comp = rng.choice(m.size, size=size, p=m / m.sum())
        return np.exp(
            self._mu[comp] + self._s[comp] ** 2 + self._s[comp] * rng.standard_normal(size)
        )


# -------------------------------------------------------------------------- fixed
class Fixed(_Dist):
    """A constant ``value_s`` (a point mass)."""

    dist: Literal["fixed"] = "fixed"
    value_s: NonNegativeFloat

    def ppf(self, u: np.ndarray) -> np.ndarray:
        return np.full(np.shape(u), float(self.value_s))

    def mean(self) -> float:
        return float(self.value_s)

    def _length_biased(self, rng: np.random.Generator, size: int) -> np.ndarray:
        return np.full(size, float(self.value_s))


#: Any of the distributions above.
Distribution = Lognormal | Gamma | Weibull | Exponential | Empirical | Fixed | LognormalMixture

#: The ``dist`` tags, in documentation order.
DIST_TAGS: tuple[str, ...] = (
    "lognormal",
    "gamma",
    "weibull",
    "exponential",
    "empirical",
    "fixed",
    "lognormal_mixture",
)


def distribution_union(classes: dict[str, type[BaseModel]], default: str) -> Any:
    """An annotated union of ``classes`` (tag -> class) discriminated by ``dist``.

    An input mapping without ``dist`` is read as ``default`` (so a latency may omit
    ``dist: lognormal``); an unknown tag fails with pydantic's ``union_tag_invalid``.
    """

    def tag_of(value: Any) -> str | None:
        if isinstance(value, dict):
            tag = value.get("dist", default)
            return tag if isinstance(tag, str) else repr(tag)
        if isinstance(value, BaseModel):
            return getattr(value, "dist", None)
        return None

    members = tuple(Annotated[cls, Tag(tag)] for tag, cls in classes.items())
    return Annotated[Union[members], Discriminator(tag_of)]  # noqa: UP007


def _check_tags() -> None:
    # Keep DIST_TAGS honest: one tag per class, same spelling.
    tags = tuple(
        c.model_fields["dist"].default
        for c in (Lognormal, Gamma, Weibull, Exponential, Empirical, Fixed, LognormalMixture)
    )
    assert tags == DIST_TAGS, tags


_check_tags()
