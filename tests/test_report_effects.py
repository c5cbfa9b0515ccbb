"""2x2 effects, their intervals over samples and seeds, verdicts, metric direction and Pareto front on hand-made runs."""

from __future__ import annotations

import numpy as np
import pytest

from report_fakes import make_2x2, make_run
from vlmsweep.report import load_runs
from vlmsweep.metrics import higher_is_better
from vlmsweep.report.effects import factorial_effects, find_factorials, pareto_front, verdict
from vlmsweep.report.runs import varying_axes


def _effects(root, metric="content.field_em"):
    runs = load_runs(root)
    facts = find_factorials(runs, varying_axes(runs))
    assert len(facts) == 1
    return facts[0], {e.name: e for e in factorial_effects(facts[0], metric)}


def test_main_effects_and_interaction_equal_hand_computed(tmp_path):
    base = [0.2, 0.4, 0.6, 0.8]  # mean 0.5
    root = make_2x2(tmp_path, {
        ("nf4", "llm"): base,                          # 0.5
        ("nf4", "all"): [v + 0.2 for v in base],       # 0.7
        ("bf16", "llm"): [0.1, 0.5, 0.5, 0.9],         # 0.5
        ("bf16", "all"): [v + 0.4 for v in base],      # 0.9
    })  # fmt: skip
    fact, eff = _effects(root)
    assert (fact.a, fact.b, fact.levels_a, fact.levels_b) == ("quant", "scope", ("nf4", "bf16"), ("llm", "all"))
    # quant: ((0.5-0.5) + (0.9-0.7)) / 2; scope: ((0.7-0.5) + (0.9-0.5)) / 2; interaction: (0.9-0.7) - (0.5-0.5)
    assert eff["quant"].estimate == pytest.approx(0.1)
    assert eff["scope"].estimate == pytest.approx(0.3)
    assert eff["quant x scope"].estimate == pytest.approx(0.2)
    assert eff["scope"].contrast == "all vs llm" and eff["quant"].contrast == "bf16 vs nf4"
    for e in eff.values():
        assert e.low <= e.estimate <= e.high
    assert eff["scope"].n_samples == 4 and eff["scope"].n_seeds == 1


def _noisy_cells(n: int, scope_shift: float, rng_seed: int = 1):
    rng = np.random.default_rng(rng_seed)
    base = rng.uniform(0.2, 0.8, n)
    # quant: a per-sample perturbation of exactly zero mean (+d on half the samples, -d on the other half)
    d = np.where(np.arange(n) % 2 == 0, 0.1, -0.1)
    noise = lambda: rng.normal(0, 0.1, n)  # noqa: E731
    return {
        ("nf4", "llm"): list(base + noise()),
        ("nf4", "all"): list(base + scope_shift + noise()),
        ("bf16", "llm"): list(base + d + noise()),
        ("bf16", "all"): list(base + d + scope_shift + noise()),
    }


def test_strong_effect_excludes_zero_null_effect_includes_it(tmp_path):
    _, eff = _effects(make_2x2(tmp_path, _noisy_cells(40, scope_shift=0.15)))
    assert eff["scope"].low > 0  # strong, consistent effect
    assert eff["quant"].low < 0 < eff["quant"].high  # zero-mean perturbation
    assert eff["quant"].within_noise and not eff["scope"].within_noise
    # one seed: the interval covers the test samples only, so nothing is called found
    assert not eff["scope"].found and eff["scope"].noise == "samples only"
    text = verdict(list(eff.values()))
    assert "scope: +0.1" in text and "over test samples only (all vs llm); one training seed" in text
    assert "no verdict" in text and "moves" not in text and "better" not in text


def test_paired_t_interval_equals_hand_computed(tmp_path):
    """One seed: the interval is the paired t interval over samples, computed here by hand."""
    from scipy import stats

    cells = _noisy_cells(12, scope_shift=0.1, rng_seed=3)
    _, eff = _effects(make_2x2(tmp_path, cells))
    c = {k: np.array(v) for k, v in cells.items()}
    d = ((c[("nf4", "all")] - c[("nf4", "llm")]) + (c[("bf16", "all")] - c[("bf16", "llm")])) / 2  # scope, per sample
    half = stats.t.ppf(0.975, 11) * d.std(ddof=1) / np.sqrt(12)
    assert (eff["scope"].low, eff["scope"].high) == pytest.approx((d.mean() - half, d.mean() + half))
    assert eff["scope"].df == 11


def test_interval_shrinks_with_more_samples(tmp_path):
    widths = []
    for n in (20, 320):
        _, eff = _effects(make_2x2(tmp_path / str(n), _noisy_cells(n, scope_shift=0.1)))
        e = eff["scope"]
        assert e.low <= e.estimate <= e.high and e.n_samples == n
        widths.append(e.high - e.low)
    assert widths[1] < widths[0] / 2.5  # ~1/sqrt(16) = 1/4 expected


def test_seeds_are_a_replicate_axis_and_widen_the_interval(tmp_path):
    base = [0.4, 0.6]
    cells = {
        ("nf4", "llm"): [base, [0.5, 0.7]],  # seed means 0.5, 0.6 -> 0.55
        ("nf4", "all"): [[0.6, 0.8], [0.8, 1.0]],  # 0.7, 0.9 -> 0.8
        ("bf16", "llm"): [base, base],  # 0.5
        ("bf16", "all"): [[0.7, 0.9], [0.5, 0.7]],  # 0.8, 0.6 -> 0.7
    }
    root = make_2x2(tmp_path, cells, seeds=2)
    runs = load_runs(root)
    assert "seed" in varying_axes(runs)
    fact, eff = _effects(root)
    assert "seed" not in (fact.a, fact.b)
    assert eff["scope"].estimate == pytest.approx(((0.8 - 0.55) + (0.7 - 0.5)) / 2)
    assert eff["quant"].estimate == pytest.approx(((0.5 - 0.55) + (0.7 - 0.8)) / 2)
    assert eff["scope"].n_seeds == 2 and eff["scope"].n_samples == 2
    # seed-level disagreement (0.7 vs 0.9 within one cell) must widen the interval beyond sample noise alone
    assert eff["scope"].noise == "seeds and samples"
    assert eff["scope"].high - eff["scope"].low > 0.05
    # the seeds' spread, hand-computed: pooled within-cell variance of run means over 4 degrees of freedom
    run_means = {"nf4/llm": (0.5, 0.6), "nf4/all": (0.7, 0.9), "bf16/llm": (0.5, 0.5), "bf16/all": (0.8, 0.6)}
    pooled = sum((a - b) ** 2 / 2 for a, b in run_means.values()) / 4
    seeds_se = np.sqrt(pooled * 4 * 0.25 / 2)  # sum_c w_c^2 / R_c with w = +-1/2 and R = 2
    assert eff["scope"].se >= seeds_se - 1e-12


def test_a_constant_paired_shift_has_no_spread(tmp_path):
    base = [0.1, 0.3, 0.9, 0.5]
    cells = {(q, s): [v + (0.25 if s == "all" else 0.0) for v in base] for q in ("nf4", "bf16") for s in ("llm", "all")}
    _, eff = _effects(make_2x2(tmp_path, cells))
    # every sample gains exactly 0.25: resampling sample ids (paired across runs) cannot move the effect
    assert (eff["scope"].low, eff["scope"].estimate, eff["scope"].high) == pytest.approx((0.25, 0.25, 0.25))
    assert (eff["quant"].low, eff["quant"].high) == pytest.approx((0.0, 0.0))


def test_found_needs_seed_noise_and_an_interval_excluding_zero(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.uniform(0.2, 0.8, 30)
    cells = {(q, s): [list(base + (0.3 if s == "all" else 0.0) + rng.normal(0, 0.02) + rng.normal(0, 0.05, 30))
                      for _ in range(3)] for q in ("nf4", "bf16") for s in ("llm", "all")}
    _, eff = _effects(make_2x2(tmp_path, cells, seeds=3))
    assert eff["scope"].found and eff["scope"].n_seeds == 3 and eff["scope"].low > 0.2
    assert not eff["quant"].found and eff["quant"].verdict_text == "not distinguishable from seed noise"
    assert eff["quant"].mde > 0 and eff["quant"].mde < 0.2
    text = verdict(list(eff.values()))
    assert text.startswith("scope moves content.field_em by +0.3") and "quant is not distinguishable from seed noise" in text


def test_no_factorial_for_a_one_axis_sweep_or_an_incomplete_grid(tmp_path):
    for k, v in enumerate((256, 512, 1024)):
        make_run(tmp_path / "a" / str(k), overrides=[f"max_pixels.visual_tokens={v}"], scores={"content.field_em": [0.5]})
    runs = load_runs(tmp_path / "a")
    assert find_factorials(runs, varying_axes(runs)) == []
    for k, (q, s) in enumerate((("nf4", "llm"), ("nf4", "all"), ("bf16", "llm"))):  # bf16/all missing
        make_run(tmp_path / "b" / str(k), choices={"quant": q, "scope": s}, scores={"content.field_em": [0.5]})
    runs = load_runs(tmp_path / "b")
    assert find_factorials(runs, varying_axes(runs)) == []


def test_metric_direction():
    assert higher_is_better("content.field_em") and higher_is_better("contract.strict_parse_rate")
    assert not higher_is_better("content.cer") and not higher_is_better("rate.leakage")
    assert not higher_is_better("tags.digit_flip") and not higher_is_better("cost.eval_seconds_per_sample")
    assert not higher_is_better("by_domain.receipt.content.cer")


def test_pareto_front_hand_case():
    # (cost, quality): (3, .6) is beaten by (2, .7); (2, .4) by (1, .5); a duplicate point is not dominated
    points = [(1, 0.5), (2, 0.7), (3, 0.6), (2, 0.4), (4, 0.9), (4, 0.9)]
    assert pareto_front(points) == [True, True, False, False, True, True]


@pytest.mark.parametrize("hinted", [2, 1])
def test_a_scope_effect_on_content_is_unmeasurable_when_every_run_read_an_ocr_hint(tmp_path, hinted):
    """All runs prompted with an OCR hint: the scope main effect and interaction on a content metric carry the
    reason instead of a verdict, and are never 'found', even at a size that is found without the hint; the other
    factor keeps its verdict. One run without a hint in the design: every effect is measured as usual."""
    from vlmsweep.report.build import HINT_HIDES_SCOPE, analyse

    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.6, 30)
    cells = {(q, sc): [list(base + (0.3 if sc == "all" else 0.0) + rng.normal(0, 0.02, 30)) for _ in range(2)]
             for q in ("nf4", "bf16") for sc in ("llm", "all")}
    root = make_2x2(tmp_path, cells, seeds=2)
    for k, run in enumerate(sorted(root.iterdir(), key=lambda p: int(p.name))):
        engine = "tesseract" if hinted == 2 or k > 0 else "none"
        (run / "config.yaml").write_text(f"ocr_hint:\n  name: {engine}\n  engine: {engine}\n")
    (fact, effects), = analyse(root, metrics=["content.field_em"]).factorials
    eff = {e.name: e for e in effects["content.field_em"]}
    if hinted == 2:
        assert eff["scope"].unmeasurable == eff["quant x scope"].unmeasurable == HINT_HIDES_SCOPE
        assert not eff["scope"].found and eff["scope"].verdict_text == HINT_HIDES_SCOPE
        assert "not measurable with ocr_hint" in verdict(list(eff.values()))
        assert not eff["quant"].unmeasurable and eff["quant"].verdict_text == "not distinguishable from seed noise"
    else:
        assert not any(e.unmeasurable for e in eff.values()) and eff["scope"].found
