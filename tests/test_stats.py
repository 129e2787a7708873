"""avsf.report.stats: the verdict rule on hand-made cases, Holm, power, and the t-interval
against a bootstrap over seeds x test clips."""

import math

import numpy as np
import pytest
from scipy import stats as st

from avsf.report import stats as S


def _verdict(diffs, *, sign=1, claimed=None, p_adjusted=None):
    ps = S.paired_stats(diffs)
    return S.directional_verdict(ps, p_adjusted=ps.p if p_adjusted is None else p_adjusted, sign=sign,
                                 claimed_size=claimed)


def test_clear_effect_supports_and_reversed_contradicts():
    clear = [2.1, 1.8, 2.4, 2.0, 1.9]
    assert _verdict(clear, claimed=1.4) == "supports"
    assert _verdict([-x for x in clear], claimed=1.4) == "contradicts"
    ps = S.paired_stats(clear)
    assert ps.ci_low > 0 and ps.mean == pytest.approx(np.mean(clear))
    # the interval is mean ± t_{0.975,4} sd / sqrt(5)
    half = st.t.ppf(0.975, 4) * np.std(clear, ddof=1) / math.sqrt(5)
    assert (ps.ci_low, ps.ci_high) == pytest.approx((np.mean(clear) - half, np.mean(clear) + half))


def test_noise_is_inconclusive_and_underpowered_when_the_claim_is_small():
    noise = [3.0, -4.0, 1.5, -2.0, 0.5]
    ps = S.paired_stats(noise)
    assert ps.ci_low < 0 < ps.ci_high
    assert _verdict(noise, claimed=5 * ps.mde) == "inconclusive"
    assert _verdict(noise, claimed=0.5 * ps.mde) == "inconclusive, underpowered"


def test_two_seeds_are_inconclusive_whatever_the_numbers():
    assert _verdict([5.0, 5.1]).startswith("inconclusive (2 seeds)")
    assert _verdict([5.0]) == "inconclusive (1 seed)"
    assert S.paired_stats([5.0]).mde != S.paired_stats([5.0]).mde  # nan: no spread from one seed


def test_holm_adjusted_p_decides_not_the_raw_one():
    diffs = [1.0, 1.3, 0.8, 1.1]
    ps = S.paired_stats(diffs)
    assert ps.p < 0.05 and _verdict(diffs, claimed=1.0) == "supports"
    assert _verdict(diffs, claimed=1.0, p_adjusted=0.06) == "inconclusive"


def test_equivalence():
    tight = [0.1, -0.2, 0.15, 0.0, -0.05, 0.1]  # within ±0.5 for sure
    p = S.tost_p(tight, margin=0.5)
    mde = S.tost_mde(float(np.std(tight, ddof=1)), len(tight))
    assert p < 0.05 and mde < 0.5
    assert S.equivalence_verdict(len(tight), p_adjusted=p, margin=0.5, mde=mde) == "equivalent"
    shifted = [x + 1.0 for x in tight]  # differs by about 1 > margin
    p2 = S.tost_p(shifted, margin=0.5)
    assert p2 > 0.5
    assert S.equivalence_verdict(len(tight), p_adjusted=p2, margin=0.5, mde=mde) == "not equivalent"
    wide = [3.0, -3.0, 2.0, -2.5, 1.0, -1.5]
    mde_wide = S.tost_mde(float(np.std(wide, ddof=1)), len(wide))
    assert S.equivalence_verdict(6, p_adjusted=S.tost_p(wide, margin=0.5), margin=0.5,
                                 mde=mde_wide) == "not equivalent, underpowered"
    assert S.equivalence_verdict(2, p_adjusted=0.0, margin=0.5, mde=0.1).startswith("inconclusive (2 seeds)")


def test_holm_order_and_monotonicity():
    raw = [0.04, 0.01, 0.03, float("nan"), 0.2]
    adj = S.holm(raw)
    # sorted 0.01 (x4), 0.03 (x3), 0.04 (x2), 0.2 (x1): 0.04, 0.09, 0.09 (monotone), 0.2
    assert adj[1] == pytest.approx(0.04) and adj[2] == pytest.approx(0.09) and adj[0] == pytest.approx(0.09)
    assert adj[4] == pytest.approx(0.2) and math.isnan(adj[3])
    order = np.argsort([r for r in raw if r == r])
    kept = [a for a in adj if a == a]
    assert all(kept[order[i]] <= kept[order[i + 1]] for i in range(len(order) - 1))
    assert S.holm([0.3, 0.4]) == [0.6, 0.6] and S.holm([0.9, 0.8]) == [1.0, 1.0]  # monotone, capped at 1


def test_mde_has_the_stated_power():
    sd, n = 3.5, 8
    mde = S.min_detectable_effect(sd, n)
    assert S.t_power(mde, sd, n) == pytest.approx(0.80, abs=1e-6)
    # the estimate: about 8 seeds per arm detect a 5-point effect at sd 3.5 (unpaired);
    # paired at the same sd of the differences, the MDE at 8 seeds is about 4 points
    assert 3.0 < mde < 5.0
    assert S.min_detectable_effect(sd, 20) < mde  # more seeds detect smaller effects
    # the normal approximation (z_{1-a/2} + z_power) sd / sqrt(n) is close at many seeds
    approx = (st.norm.ppf(0.975) + st.norm.ppf(0.8)) * sd / math.sqrt(200)
    assert S.min_detectable_effect(sd, 200) == pytest.approx(approx, rel=0.02)


def test_compute_claims_keep_their_relative_tolerance():
    assert S.compute_verdict(11.2, 11.0) == "supports" and S.compute_verdict(20.0, 11.0) == "contradicts"
    assert S.compute_verdict(float("nan"), 11.0) == "not run at this scale"


def test_size_is_judged_only_at_the_paper_scale():
    ps = S.paired_stats([1.0, 1.5, 2.0, 1.2])
    assert S.size_agreement(ps, 1.4, scale="smoke") == "not judged below the paper scale"
    assert S.size_agreement(ps, 1.4, scale="paper") == "agrees"
    assert S.size_agreement(ps, 5.0, scale="paper").startswith("differs")


def test_t_interval_agrees_with_a_bootstrap_over_seeds_and_clips():
    """Per-clip correctness of two models (the same test clips for every seed), drawn from a
    model with a seed effect, a clip difficulty and per-clip Bernoulli noise.

    The bootstrap resamples seeds and clips (the same clip draw for both rows: the comparison
    stays paired) and takes the percentile interval of the mean accuracy difference. Tolerance:
    the two intervals estimate the same variance except that (a) resampling clips adds the test
    clips' sampling noise once more, though each seed's score already contains it (the known
    conservativeness of the two-way bootstrap: at most twice the variance, a width ratio up to
    sqrt(2)), and (b) percentile vs t quantiles at 20 seeds (1.96 / 2.09, x sqrt(19/20)): a
    ratio down to about 0.9. Both centres estimate the same mean difference."""
    rng = np.random.default_rng(0)
    seeds, clips, boot = 20, 160, 2000
    for _ in range(3):
        difficulty = rng.normal(0.0, 1.0, clips)

        def correct(gain):
            logit = difficulty[None, :] + rng.normal(0.0, 0.15, (seeds, 1)) + gain - 0.5
            return (rng.random((seeds, clips)) < 1.0 / (1.0 + np.exp(-logit))).astype(float)

        base, new = correct(0.0), correct(0.3)
        diffs = 100.0 * (new.mean(1) - base.mean(1))
        ps = S.paired_stats(diffs)
        draws = np.empty(boot)
        for b in range(boot):
            si, ci = rng.integers(0, seeds, seeds), rng.integers(0, clips, clips)
            draws[b] = 100.0 * (new[np.ix_(si, ci)].mean() - base[np.ix_(si, ci)].mean())
        lo, hi = np.percentile(draws, [2.5, 97.5])
        width = ps.ci_high - ps.ci_low
        assert abs((lo + hi) / 2 - ps.mean) < 0.15 * width
        assert 0.85 < (hi - lo) / width < 1.55
