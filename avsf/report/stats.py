"""The verdict rule: paired differences over seeds, t-intervals, power, equivalence, Holm.

Stated once here; :data:`RULE` renders it (from the constants below) into every table.md.

- Every row of a table runs the same seeds; a claim's difference is paired by seed:
  ``d_s = claimed_s - baseline_s`` over the seeds both rows finished (n of them).
- Interval: the 95 % Student t-interval of the mean of ``d`` (``mean ± t_{0.975, n-1} sd/√n``),
  over seeds. The seed-to-seed spread it rests on already holds the test set's sampling
  noise (each seed is scored on the same finite test set), which is why it agrees with a
  bootstrap over seeds x test clips (``tests/test_stats.py``).
- Test: two-sided paired t-test of ``mean(d) = 0``; its p-values are Holm-adjusted within
  the table (every accuracy claim the table tests at this scale is one hypothesis).
  ``supports`` when the adjusted p < alpha and the mean has the claimed sign, ``contradicts``
  when it has the other sign, ``inconclusive`` otherwise. The interval shown is unadjusted
  (with one test in the table the two agree: p < alpha exactly when it excludes 0).
- Similarity claims ("performs similarly") are tested for equivalence with two one-sided
  tests (TOST) at a stated margin: ``equivalent`` when the Holm-adjusted TOST p < alpha,
  else ``not equivalent``.
- Power: the minimum detectable effect (MDE) is the true mean difference the paired t-test
  (two-sided, alpha) detects with probability 80 % at the seeds run, from the noncentral t
  with the observed sd of ``d`` plugged in for the true one. For equivalence claims it is the
  smallest margin TOST shows with 80 % power when the true difference is 0, from the usual
  approximation ``se * (t_{1-alpha} + t_{(1+power)/2})``. ``underpowered`` is added when the
  claimed effect (or the margin) is smaller than the MDE.
- Fewer than :data:`MIN_SEEDS` seeds: ``inconclusive (n seeds)``, never a directional word.
- Compute claims (GFLOPs ratios and shares) are deterministic counts: ``supports`` within
  :data:`COMPUTE_TOLERANCE` (relative) of the claimed value, else ``contradicts``.
- Agreement in size with the paper (the claimed delta inside our interval) is judged only at
  the paper scale; below it the models, data and schedules differ from the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize
from scipy import stats as st

CONFIDENCE = 0.95  # of the intervals
ALPHA = 0.05  # of every test, after Holm's adjustment within a table
POWER = 0.80  # of the minimum detectable effect
MIN_SEEDS = 3  # fewer seeds: inconclusive, whatever the numbers say
COMPUTE_TOLERANCE = 0.25  # relative tolerance of compute claims

SUPPORTS, CONTRADICTS, INCONCLUSIVE = "supports", "contradicts", "inconclusive"
EQUIVALENT, NOT_EQUIVALENT = "equivalent", "not equivalent"
UNDERPOWERED = "underpowered"

RULE = (
    f"Rows run the same seeds; ours = mean over seeds of the paired difference (claimed row minus "
    f"baseline row, same seed). Interval: {CONFIDENCE:.0%} t-interval over seeds (unadjusted). "
    f"Verdict from the two-sided paired t-test, p Holm-adjusted within this table (p_holm): "
    f"'{SUPPORTS}' when p_holm < {ALPHA:g} and ours has the claimed sign, '{CONTRADICTS}' when it "
    f"has the other sign, else '{INCONCLUSIVE}'. Similarity claims: two one-sided tests (TOST) at "
    f"the stated margin, '{EQUIVALENT}' when p_holm < {ALPHA:g}, else '{NOT_EQUIVALENT}'. mde: the "
    f"difference the test detects with {POWER:.0%} power at these seeds (noncentral t, the observed "
    f"sd of the differences; for TOST the smallest margin shown with {POWER:.0%} power at a true "
    f"difference of 0, se x (t_(1-alpha) + t_((1+power)/2))); '{UNDERPOWERED}' is added when the "
    f"claimed effect (or margin) is smaller than the mde. Fewer than {MIN_SEEDS} seeds: "
    f"'{INCONCLUSIVE} (n seeds)'. Compute claims hold within {COMPUTE_TOLERANCE:.0%} (relative) of "
    f"the claimed value. Size agreement with the paper (its delta inside our interval) is judged "
    f"only at the paper scale.")


@dataclass(frozen=True)
class Paired:
    """Statistics of paired differences ``d`` [n] (one per seed)."""

    n: int
    mean: float
    sd: float  # sample sd of d (ddof=1); nan when n < 2
    ci_low: float
    ci_high: float
    p: float  # two-sided paired t-test of mean(d) = 0 (nan when n < 2)
    mde: float  # minimum detectable |mean| at POWER (nan when n < 2)


def paired_stats(diffs, *, confidence: float = CONFIDENCE, alpha: float = ALPHA, power: float = POWER) -> Paired:
    """t-interval, p-value and MDE of paired differences ``diffs`` [n] (nan entries dropped)."""
    d = np.asarray([x for x in np.asarray(diffs, dtype=float) if not math.isnan(x)])
    n = len(d)
    nan = float("nan")
    if n == 0:
        return Paired(0, nan, nan, nan, nan, nan, nan)
    mean = float(d.mean())
    if n < 2:
        return Paired(1, mean, nan, nan, nan, nan, nan)
    sd = float(d.std(ddof=1))
    se = sd / math.sqrt(n)
    half = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * se
    if se > 0:
        p = float(2 * st.t.sf(abs(mean) / se, n - 1))
    else:  # identical differences: certain unless they are all 0
        p = 1.0 if mean == 0 else 0.0
    return Paired(n, mean, sd, mean - half, mean + half, p, min_detectable_effect(sd, n, alpha=alpha, power=power))


def mean_ci_half(values, *, confidence: float = CONFIDENCE) -> float:
    """Half-width of the t-interval of the mean of ``values`` [n] (nan entries dropped): a
    row's error bar over seeds; nan below 2 values."""
    v = np.asarray([x for x in np.asarray(values, dtype=float) if not math.isnan(x)])
    if len(v) < 2:
        return float("nan")
    return float(st.t.ppf(0.5 + confidence / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def t_power(effect: float, sd: float, n: int, *, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test (n pairs, sd of the differences) at a true mean
    difference ``effect``: P(|T| > t_crit) with T ~ noncentral t(n - 1, effect √n / sd)."""
    df = n - 1
    crit = float(st.t.ppf(1 - alpha / 2, df))
    nc = effect * math.sqrt(n) / sd
    upper = float(st.nct.sf(crit, df, nc))
    lower = float(st.nct.cdf(-crit, df, nc))  # the wrong-side tail; scipy gives nan far out, where it is ~0
    return upper + (0.0 if math.isnan(lower) else lower)


def min_detectable_effect(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The true |mean difference| the two-sided paired t-test detects with probability ``power``
    (n pairs whose differences have standard deviation ``sd``); nan when n < 2."""
    if n < 2 or math.isnan(sd):
        return float("nan")
    if sd == 0:
        return 0.0
    hi = sd
    while t_power(hi, sd, n, alpha=alpha) < power:  # bracket the root (power grows with the effect)
        hi *= 2
    return float(optimize.brentq(lambda e: t_power(e, sd, n, alpha=alpha) - power, 0.0, hi, xtol=1e-9 * sd))


def tost_p(diffs, *, margin: float) -> float:
    """p-value of two one-sided paired t-tests of H0: |mean(d)| >= margin (the larger one-sided
    p); small when the mean lies within ±margin. nan when fewer than 2 differences."""
    d = np.asarray([x for x in np.asarray(diffs, dtype=float) if not math.isnan(x)])
    n = len(d)
    if n < 2:
        return float("nan")
    mean, se = float(d.mean()), float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return 0.0 if abs(mean) < margin else 1.0
    p_lower = float(st.t.sf((mean + margin) / se, n - 1))  # H0: mean <= -margin
    p_upper = float(st.t.cdf((mean - margin) / se, n - 1))  # H0: mean >= +margin
    return max(p_lower, p_upper)


def tost_mde(sd: float, n: int, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest equivalence margin TOST shows with probability ``power`` when the true
    difference is 0 (approximation se * (t_{1-alpha} + t_{(1+power)/2}), df = n - 1)."""
    if n < 2 or math.isnan(sd):
        return float("nan")
    df = n - 1
    return sd / math.sqrt(n) * float(st.t.ppf(1 - alpha, df) + st.t.ppf((1 + power) / 2, df))


def holm(pvalues) -> list[float]:
    """Holm's step-down adjustment (family-wise error control); nan entries are left out of
    the family and stay nan. Adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))."""
    p = [float(x) for x in pvalues]
    valid = sorted((v, i) for i, v in enumerate(p) if not math.isnan(v))
    m = len(valid)
    out = [float("nan")] * len(p)
    running = 0.0
    for rank, (v, i) in enumerate(valid):
        running = max(running, min(1.0, (m - rank) * v))
        out[i] = running
    return out


def seeds_note(n: int) -> str:
    return f"{INCONCLUSIVE} ({n} seed{'s' if n != 1 else ''})"


def directional_verdict(stats: Paired, *, p_adjusted: float, sign: int, claimed_size: float | None,
                        alpha: float = ALPHA) -> str:
    """``supports`` / ``contradicts`` / ``inconclusive`` for a claim of sign ``sign`` (+1 / -1),
    ``, underpowered`` added when |claimed_size| < the MDE; fewer than MIN_SEEDS seeds:
    ``inconclusive (n seeds)``."""
    if stats.n < MIN_SEEDS:
        word = seeds_note(stats.n)
    elif p_adjusted < alpha and stats.mean != 0 and sign:
        word = SUPPORTS if (stats.mean > 0) == (sign > 0) else CONTRADICTS
    else:
        word = INCONCLUSIVE
    if claimed_size is not None and not math.isnan(stats.mde) and abs(claimed_size) < stats.mde:
        word += f", {UNDERPOWERED}"
    return word


def equivalence_verdict(n: int, *, p_adjusted: float, margin: float, mde: float, alpha: float = ALPHA) -> str:
    """``equivalent`` / ``not equivalent`` (``, underpowered`` when margin < mde); fewer than
    MIN_SEEDS seeds: ``inconclusive (n seeds)``."""
    word = seeds_note(n) if n < MIN_SEEDS else EQUIVALENT if p_adjusted < alpha else NOT_EQUIVALENT
    if not math.isnan(mde) and margin < mde:
        word += f", {UNDERPOWERED}"
    return word


def compute_verdict(ours: float | None, target: float | None, *, tolerance: float = COMPUTE_TOLERANCE) -> str:
    """A deterministic count against the claimed value: within ``tolerance`` (relative)."""
    if ours is None or target is None or math.isnan(ours):
        return "not run at this scale"
    return SUPPORTS if abs(ours - target) <= tolerance * abs(target) else CONTRADICTS


def size_agreement(stats: Paired, claimed_size: float | None, *, scale: str) -> str:
    """Whether the paper's delta lies inside our interval: judged only at the paper scale."""
    if scale != "paper":
        return "not judged below the paper scale"
    if claimed_size is None:
        return "no size claimed"
    if stats.n < MIN_SEEDS or math.isnan(stats.ci_low):
        return seeds_note(stats.n)
    return "agrees" if stats.ci_low <= claimed_size <= stats.ci_high else \
        f"differs (paper {claimed_size:+g} outside [{stats.ci_low:+.2f}, {stats.ci_high:+.2f}])"
