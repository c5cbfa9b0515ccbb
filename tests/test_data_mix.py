"""Mixing ratios, receipt_ratio, hard negatives and split disjointness (domain assignment only, no rendering)."""

from collections import Counter

import pytest

from vlmsweep.config import CONF_DIR, DataMixConfig
from vlmsweep.data import SPLITS, domain_weights
from vlmsweep.data.build import split_jobs, targeted_jobs
from vlmsweep.data.mix import assign_domains

KO, ZH, RC, RK, RZ = "prescription_ko", "prescription_zh", "receipt", "receipt_ko", "receipt_zh"
NO_RECEIPTS = {RC: 0.0, RK: 0.0, RZ: 0.0}


def test_preset_weights_and_explicit_weights():
    # 1:1:1 between Korean prescriptions, Chinese prescriptions and receipts; receipts a third per language.
    assert domain_weights(DataMixConfig(name="rx_receipt_1_1_1")) == pytest.approx(
        {KO: 1 / 3, ZH: 1 / 3, RC: 1 / 9, RK: 1 / 9, RZ: 1 / 9})
    assert domain_weights(DataMixConfig(name="medical_only")) == pytest.approx({KO: 0.5, ZH: 0.5, **NO_RECEIPTS})
    assert domain_weights(DataMixConfig(name="medical_heavy")) == pytest.approx(
        {KO: 0.4, ZH: 0.4, RC: 0.2 / 3, RK: 0.2 / 3, RZ: 0.2 / 3})
    mix = DataMixConfig(name="custom", weights={KO: 3, ZH: 1, RC: 0})
    assert domain_weights(mix) == pytest.approx({KO: 0.75, ZH: 0.25, **NO_RECEIPTS})
    mix = DataMixConfig(name="custom", weights={KO: 1, ZH: 1, RK: 1, RZ: 1})  # Korean and Chinese receipts only
    assert domain_weights(mix) == pytest.approx({KO: 0.25, ZH: 0.25, RC: 0.0, RK: 0.25, RZ: 0.25})


def test_the_config_presets_match_the_built_in_weights():
    import yaml
    from vlmsweep.data.mix import PRESET_WEIGHTS
    for name, weights in PRESET_WEIGHTS.items():
        conf = yaml.safe_load((CONF_DIR / "data_mix" / f"{name}.yaml").read_text("utf-8"))
        assert conf["weights"] == weights, name


def test_receipt_ratio_takes_its_share_split_by_language_and_medical_weights_split_the_rest():
    mix = DataMixConfig(name="x", weights={KO: 3, ZH: 1, RC: 5}, receipt_ratio=0.2)
    assert domain_weights(mix) == pytest.approx({KO: 0.6, ZH: 0.2, RC: 0.2, RK: 0.0, RZ: 0.0})
    mix = DataMixConfig(name="x", weights={KO: 1, ZH: 1, RC: 2, RK: 1, RZ: 1}, receipt_ratio=0.4)
    assert domain_weights(mix) == pytest.approx({KO: 0.3, ZH: 0.3, RC: 0.2, RK: 0.1, RZ: 0.1})
    mix = DataMixConfig(name="medical_only", receipt_ratio=0.6)  # no receipt weights: equal languages
    assert domain_weights(mix) == pytest.approx({KO: 0.2, ZH: 0.2, RC: 0.2, RK: 0.2, RZ: 0.2})
    mix = DataMixConfig(name="x", weights={RC: 1}, receipt_ratio=0.4)  # no medical weights: equal split
    assert domain_weights(mix) == pytest.approx({KO: 0.3, ZH: 0.3, RC: 0.4, RK: 0.0, RZ: 0.0})


@pytest.mark.parametrize("mix, message", [
    (DataMixConfig(name="nope"), "has no weights"),
    (DataMixConfig(name="x", weights={"prescription_en": 1}), "unknown domain(s) ['prescription_en']"),
    (DataMixConfig(name="x", weights={KO: -1, ZH: 2}), ">= 0"),
    (DataMixConfig(name="x", weights={KO: 0, ZH: 0}), "sum to zero"),
    (DataMixConfig(name="x", weights={KO: 1}, receipt_ratio=1.5), "receipt_ratio=1.5"),
])
def test_bad_mix_is_an_error(mix, message):
    with pytest.raises(ValueError) as e:
        domain_weights(mix)
    assert message in str(e.value)


@pytest.mark.parametrize("mix, expected", [
    (DataMixConfig(name="rx_receipt_1_1_1"), {(KO, KO): 1000, (ZH, ZH): 1000, (RC, RC): 333, (RK, RK): 333, (RZ, RZ): 333}),
    (DataMixConfig(name="medical_only"), {(KO, KO): 1500, (ZH, ZH): 1500}),
    (DataMixConfig(name="medical_heavy", receipt_ratio=0.1),
     {(KO, KO): 1350, (ZH, ZH): 1350, (RC, RC): 100, (RK, RK): 100, (RZ, RZ): 100}),
    # 10% hard negatives: 300 receipt images (a third per language) asked as prescriptions, the other 2700 by the weights.
    (DataMixConfig(name="rx_receipt_1_1_1", hard_negatives=0.1),
     {(KO, KO): 900, (ZH, ZH): 900, (RC, RC): 300, (RK, RK): 300, (RZ, RZ): 300,
      (KO, RC): 50, (KO, RK): 50, (KO, RZ): 50, (ZH, RC): 50, (ZH, RK): 50, (ZH, RZ): 50}),
])
def test_mixing_ratios_over_3000_draws(mix, expected):
    counts = Counter(assign_domains(3000, mix, base_seed=0, stream="train"))
    assert set(counts) == set(expected)
    for k, v in expected.items():
        assert abs(counts[k] - v) <= 1, (k, counts[k], v)


def test_small_splits_still_hold_every_domain_and_order_is_seeded():
    pairs = assign_domains(9, DataMixConfig(name="rx_receipt_1_1_1"), 0, "test")
    assert Counter(d for d, _ in pairs) == {KO: 3, ZH: 3, RC: 1, RK: 1, RZ: 1}
    pairs = assign_domains(7, DataMixConfig(name="rx_receipt_1_1_1"), 0, "test")
    assert pairs == assign_domains(7, DataMixConfig(name="rx_receipt_1_1_1"), 0, "test")
    orders = {tuple(assign_domains(30, DataMixConfig(name="rx_receipt_1_1_1"), s, "test")) for s in range(5)}
    assert len(orders) > 1


def test_splits_are_disjoint_by_id_and_seed():
    mix = DataMixConfig(name="rx_receipt_1_1_1", hard_negatives=0.1)
    ids, seeds = {}, {}
    for split in SPLITS:
        jobs = split_jobs(split, 2000, mix, seed=0)
        ids[split] = {j[0] for j in jobs}
        seeds[split] = {j[1] for j in jobs}
        assert len(ids[split]) == len(seeds[split]) == 2000
    for focus in ("digits", "hard_negative"):
        for cycle in (1, 2):
            jobs = targeted_jobs(focus, 500, cycle, (KO, ZH))
            ids[f"{focus}{cycle}"] = {j[0] for j in jobs}
            seeds[f"{focus}{cycle}"] = {j[1] for j in jobs}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not ids[a] & ids[b], (a, b)
            assert not seeds[a] & seeds[b], (a, b)


def test_same_split_with_another_base_seed_draws_other_documents():
    mix = DataMixConfig(name="rx_receipt_1_1_1")
    a = {j[1] for j in split_jobs("train", 100, mix, seed=0)}
    b = {j[1] for j in split_jobs("train", 100, mix, seed=1)}
    assert not a & b


def test_unknown_split_and_focus_are_errors():
    with pytest.raises(ValueError, match="split='val'"):
        split_jobs("val", 4, DataMixConfig(name="rx_receipt_1_1_1"), 0)
    with pytest.raises(ValueError, match="focus='blur'"):
        targeted_jobs("blur", 4, 0, (KO,))
    with pytest.raises(ValueError, match="n=0"):
        split_jobs("train", 0, DataMixConfig(name="rx_receipt_1_1_1"), 0)
