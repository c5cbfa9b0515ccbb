"""The retrain loop: mining, targeted synthesis, lineage, the leakage guard, regression warnings, the report, resume."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from conftest import FAST, compose
from vlmsweep.data import Record, empty_target, read_manifest
from vlmsweep.data.leakage import LeakageError, check_no_leak
from vlmsweep.evaluate.metrics import TAGS
from vlmsweep.evaluate.remedies import FOCUS_OF_TAG, UNFIXABLE_TAGS, config_fixes
from vlmsweep.loop.cycle import _CycleTracker
from vlmsweep.loop.guard import regression_drops
from vlmsweep.loop.mining import build_hard_set, mine_failures, training_set
from vlmsweep.loop.noise import TargetedChange, noise_seeds, seed_band, targeted_changes
from vlmsweep.loop.report import plot_tags, render_loop_report
from vlmsweep.loop.state import CycleResult, STATE_FILE, load_state


def rec(rid: str, seed: int | None = None, domain: str = "prescription_ko", image: str | None = None) -> Record:
    return Record(id=rid, image=Path(image or f"/nonexistent/{rid}.jpg"), domain=domain,
                  target=empty_target("prescription"), image_domain=domain, seed=seed)


def sample(sid: str, tags: list[str], em: float | None = None, cer: float = 0.0, domain: str = "prescription_ko") -> dict:
    return {"id": sid, "domain": domain, "tags": tags, "scores": {"content.field_em": em, "text.raw_cer": cer}}


# ----------------------------------------------------------------------------- mining and synthesis


def test_mining_takes_the_worst_k_per_fixable_tag_once_and_records_lineage():
    pool = [rec(i) for i in "abcdef"]
    samples = [
        sample("a", ["digit_flip"], em=0.5, cer=0.2),
        sample("b", ["digit_flip", "unit_confusion"], em=0.1),
        sample("c", ["digit_flip", "parse_fail"], em=None, cer=0.9),  # no answer object: field_em counts as 0
        sample("d", ["parse_fail", "run_on"]),  # only tags data cannot fix: never mined
        sample("e", ["unit_confusion"], em=0.3),
        sample("f", []),
    ]
    mined = mine_failures(samples, pool, per_tag=2, cycle=3)
    # digit_flip: c (em 0) before b (0.1) before a (0.5); unit_confusion: b is taken already, so e.
    assert {t: [(r.id, r.origin) for r in rs] for t, rs in mined.items()} == {
        "digit_flip": [("c", "mined:3:digit_flip"), ("b", "mined:3:digit_flip")],
        "unit_confusion": [("e", "mined:3:unit_confusion")],
    }
    assert mined["digit_flip"][0].target == pool[2].target  # the mining-pool record itself, relabelled
    # Ties on field_em are broken by the higher raw-text CER.
    tie = mine_failures([sample("a", ["missing_value"], 0.2, 0.1), sample("b", ["missing_value"], 0.2, 0.7)], pool, 1, 0)
    assert [r.id for r in tie["missing_value"]] == ["b"]
    with pytest.raises(ValueError, match=r"\['zz'\] are not in the mining pool"):
        mine_failures([sample("zz", ["digit_flip"])], pool, 1, 0)


def test_hard_set_synthesises_through_the_generators_per_tag(cache_dir):
    pool = [rec("m0"), rec("m1", domain="receipt"), rec("m2")]
    samples = [
        sample("m0", ["missing_value", "hallucinated_value"], em=0.2),
        sample("m1", ["digit_flip"], em=0.4, domain="receipt"),
        sample("m2", ["domain_leakage", "parse_fail", "run_on"], em=None),
    ]
    hard = build_hard_set(samples, pool, cycle=2, mine_per_tag=1, synth_per_tag=2, data_seed=0,
                               cache_dir=cache_dir / "data", noise="none")
    assert hard.mined == {"digit_flip": 1, "missing_value": 1, "domain_leakage": 1}  # m0 is mined once
    assert hard.synthesised == {"digit_flip": 2, "missing_value": 2, "hallucinated_value": 2, "domain_leakage": 2}
    assert hard.unfixable == {"parse_fail": 1, "run_on": 1}
    assert len(hard.records) == 3 + 8 and len({r.id for r in hard.records}) == 11
    synth = {}
    for r in hard.records[3:]:
        synth.setdefault(r.origin, []).append(r)
    assert sorted(synth) == ["synth:2:digit_flip", "synth:2:domain_leakage", "synth:2:hallucinated_value", "synth:2:missing_value"]
    # digit_flip failed on a receipt: more receipts with confusable digits.
    assert [(r.domain, r.id.split("-")[1]) for r in synth["synth:2:digit_flip"]] == [("receipt", "digits")] * 2
    # domain_leakage: hard negatives, receipt images asked as prescriptions with an all-null answer.
    # The receipts' language cycles (English, Korean, ...).
    assert [r.image_domain for r in synth["synth:2:domain_leakage"]] == ["receipt", "receipt_ko"]
    for r in synth["synth:2:domain_leakage"]:
        assert (r.domain, r.target) == ("prescription_ko", empty_target("prescription"))
    # The two sparse-form tags draw distinct documents (their own seed streams).
    assert {r.seed for r in synth["synth:2:missing_value"]}.isdisjoint({r.seed for r in synth["synth:2:hallucinated_value"]})
    assert all(r.id.startswith("targeted-sparse-") for r in synth["synth:2:missing_value"])
    # Lineage: each synthetic record names the mined records whose failure it targets (m0 was mined under
    # missing_value, and carries hallucinated_value too), and the hard set's manifest keeps it.
    assert {o: {r.parents for r in rs} for o, rs in synth.items()} == {
        "synth:2:digit_flip": {("m1",)}, "synth:2:domain_leakage": {("m2",)},
        "synth:2:hallucinated_value": {("m0",)}, "synth:2:missing_value": {("m0",)}}
    assert all(r.parents == () for r in hard.records[:3])


def test_a_cycle_tracker_offsets_steps_and_forwards_everything_else():
    from vlmsweep.pipeline.tracking import Tracker

    calls = []

    class Recording(Tracker):
        def log(self, values, step=None):
            calls.append(("log", step))

        def table(self, name, rows):
            calls.append(("table", name))

    cycle = _CycleTracker(Recording(None), offset=30)
    cycle.log({"train/loss": 1.0}, step=5)
    cycle.table("cycle_1/samples", [{"id": "a"}])  # a loop run with W&B logs each cycle's samples
    assert calls == [("log", 35), ("table", "cycle_1/samples")]
    public = [n for n in dir(Tracker) if not n.startswith("_")]
    assert all(callable(getattr(cycle, n)) or n == "active" for n in public)


def test_training_set_oversamples_the_hard_set_with_unique_ids():
    base, hard = [rec("t0"), rec("t1")], [rec("h0"), rec("h1")]
    out = training_set(base, hard, oversample=3)
    assert [r.id for r in out] == ["t0", "t1", "h0", "h1", "h0#rep1", "h1#rep1", "h0#rep2", "h1#rep2"]
    assert training_set(base, [], 2) == base
    with pytest.raises(ValueError, match="loop.oversample=0"):
        training_set(base, hard, 0)


def test_guard_names_every_held_out_id_seed_or_image_that_would_be_trained_on():
    held = {"test": [rec("test-00000", seed=11)], "regression": [rec("regression-00001", seed=22, image="/x/r1.jpg")]}
    check_no_leak([rec("train-0", seed=1), rec("mining-0", seed=2)], held, "cycle 0")  # clean: no error
    bad = [
        rec("train-0", seed=1),
        rec("test-00000#rep1", seed=5),  # an oversampled copy of a test id
        rec("targeted-digits-1-00000", seed=22),  # same generator seed as a regression sample: a near-duplicate
        rec("mine-7", image="/x/r1.jpg"),  # the regression image itself
    ]
    with pytest.raises(LeakageError) as err:
        check_no_leak(bad, held, "cycle 4")
    msg = str(err.value)
    assert msg.startswith("cycle 4: 3 training sample(s) would leak")
    assert "test-00000#rep1 (origin base) = test id test-00000 (same id)" in msg
    assert "targeted-digits-1-00000 (origin base) = regression id regression-00001 (same generator seed 22)" in msg
    assert "mine-7 (origin base) = regression id regression-00001 (same image file)" in msg
    assert "train-0" not in msg


def test_regression_drops_warn_in_each_metrics_direction_against_previous_and_first_cycle():
    history = [
        {"content.field_em": 0.50, "content.cer": 0.20, "content.anls": 0.9},
        {"content.field_em": 0.44, "content.cer": 0.20, "content.anls": 0.9},
        {"content.field_em": 0.40, "content.cer": 0.30},  # anls absent (no answer object): not compared
    ]
    names = ["content.field_em", "content.cer", "content.anls"]
    warnings = regression_drops(history, 0.05, names)
    # field_em: -0.04 vs cycle 1 (within the margin), -0.10 vs cycle 0; cer (lower is better): +0.10 vs both.
    assert warnings == [
        "cycle 2: regression content.field_em 0.400 vs 0.500 at cycle 0 (worse by 0.100 > loop.regression_margin=0.05)",
        "cycle 2: regression content.cer 0.300 vs 0.200 at cycle 1 (worse by 0.100 > loop.regression_margin=0.05)",
        "cycle 2: regression content.cer 0.300 vs 0.200 at cycle 0 (worse by 0.100 > loop.regression_margin=0.05)",
    ]
    assert regression_drops(history[:1], 0.05, names) == []
    assert regression_drops(history[:2], 0.1, names) == []  # a drop of 0.06 within a margin of 0.1


def test_tags_data_cannot_fix_get_the_config_change_that_fixes_them():
    free = compose(["loss=full"])
    assert set(UNFIXABLE_TAGS) == {"parse_fail", "wrong_keys", "type_mismatch", "run_on", "repetition_loop", "instruction_echo",
                                          "unreadable_input"}
    assert set(UNFIXABLE_TAGS) | set(FOCUS_OF_TAG) == set(TAGS)
    assert "vlmsweep.data check" in config_fixes("unreadable_input", free)
    assert config_fixes("parse_fail", free).startswith("decoding=json_schema")
    assert config_fixes("instruction_echo", free).startswith("loss=assistant_only")
    assert "loss=assistant_only" in config_fixes("run_on", free)
    assert config_fixes("domain_leakage", free).startswith("domain_tag=prompt")
    constrained = compose(["decoding=json_schema", "domain_tag=prompt"])
    assert config_fixes("parse_fail", constrained).startswith("eval.max_new_tokens higher")
    assert config_fixes("instruction_echo", constrained) == "decoding=json_schema"
    assert config_fixes("domain_leakage", constrained) == "already domain_tag=prompt"


def test_cycle_report_lists_every_metric_and_tag_per_cycle_with_deltas(tmp_path):
    def cycle(c, em, digit, hard_size, warnings=()):
        hs = {"size": hard_size, "counts": {"digit_flip": digit}, "mined": {"digit_flip": min(digit, 1)},
              "synthesised": {"digit_flip": 2 if digit else 0}, "unfixable": {}}
        test = {"content.field_em": em, "tags.digit_flip": float(digit), "tags.parse_fail": 1.0,
                "by_domain.prescription_ko.content.field_em": em}
        summary = {"train_size": 4 + 2 * c, "train_origins": {"base": 4, "mined": c, "synth": c}, "hard_set_trained": c,
                   "adapter_from": "base model", "hard_set_next": hs, "regression_warnings": list(warnings)}
        return CycleResult(c, test, {"content.field_em": em}, {"tags.digit_flip": float(digit)}, summary)

    history = [cycle(0, 0.5, 3, 3), cycle(1, 0.625, 1, 0, ["cycle 1: regression content.field_em dropped"])]
    cfg = compose(FAST + ["loop.cycles=1"])
    md = render_loop_report(history, cfg, None, "tags_over_cycles.png")
    assert "| content.field_em | ↑ | 0.500 | 0.625 (+0.125) |" in md
    assert "| tags.digit_flip | ↓ | 3 | 1 (-2) |" in md
    assert "| by_domain.prescription_ko.content.field_em | ↑ | 0.500 | 0.625 (+0.125) |" in md
    assert "- ⚠ cycle 1: regression content.field_em dropped" in md
    assert "- ⚠ cycle 1 mined nothing from the mining pool" in md
    assert "| 0 | digit_flip | 3 | 1 | 2 | digits |" in md
    assert "| parse_fail | 1 | 0 | decoding=json_schema" in md
    png = plot_tags(history, tmp_path / "tags.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Whether the answers depend on the page decides what the mined tags are: guesses, or misreadings.
    guessing = {"own": 0.109, "chance": 0.110, "margin": -0.001, "p_value": 0.549, "distinct_outputs": 5, "pages": 64}
    for h in history:
        h.summary["chance_test"] = guessing
    md = render_loop_report(history, cfg, None, None)
    assert ("cycle 0: field EM 0.109 against 0.110 by chance (margin -0.001, p = 0.549, 5 distinct outputs for 64 "
            "pages)") in md and "No cycle's answers do: the model is not reading" in md
    history[1].summary["chance_test"] = dict(guessing, p_value=0.001)
    md = render_loop_report(history, cfg, None, None)
    assert "Do the test answers depend on the page?" in md and "not reading" not in md


def test_the_seed_band_is_a_prediction_interval_for_the_change_between_two_seeds():
    # Counts 2, 3, 4 over three seeds: s = 1, t(0.975, 2) = 4.3027, band = 4.3027 x sqrt(2) = 6.085.
    assert seed_band([2, 3, 4]) == pytest.approx(6.0849, abs=1e-4)
    assert seed_band([5]) is None and seed_band([3, 3, 3]) is None  # unmeasured, not zero

    def change(before, after, seeds):
        return TargetedChange(1, "digit_flip", before, after, tuple(seeds), seed_band(seeds)).verdict

    assert change(9, 2, [2, 3, 4]) == "reduced beyond seed noise"
    assert change(8, 2, [2, 3, 4]) == "within seed noise"
    assert change(2, 9, [2, 3, 4]) == "increased beyond seed noise"
    assert change(5, 0, [5, 5, 5]).startswith("no verdict (the 3 seeds agreed exactly")
    assert change(5, 0, [5]).startswith("no verdict (one seed")

    # Calibration: when the hard set does nothing, before and after are two more draws of the seed distribution,
    # and the band must call a change in ~5% of loops. A real drop of 4 seed SDs it sees far more often, and more
    # often with more seeds (3 seeds: about a third of the time; the default's power is low, and the docs say so).
    import numpy as np

    rng = np.random.default_rng(0)

    def rates(n_seeds: int, trials: int = 4000) -> tuple[float, float]:
        null = shifted = 0
        for _ in range(trials):
            seeds, before, after = rng.normal(10, 1.5, n_seeds), rng.normal(10, 1.5), rng.normal(10, 1.5)
            band = seed_band(seeds)
            null += abs(after - before) > band
            shifted += (before - (after - 6.0)) > band
        return null / trials, shifted / trials

    (null3, power3), (null6, power6) = rates(3), rates(6)
    assert 0.03 < null3 < 0.07 and 0.03 < null6 < 0.07
    assert power3 > 5 * null3 and power6 > power3 + 0.2


def test_targeted_changes_follow_the_hard_set_of_the_cycle_before():
    def cycle(c, mined, synth, regression):
        summary = {"train_size": 4, "train_origins": {"base": 4}, "hard_set_trained": 0, "adapter_from": "base model",
                   "hard_set_next": {"size": 1, "counts": {}, "mined": mined, "synthesised": synth, "unfixable": {}}}
        return CycleResult(c, {}, regression, {}, summary)

    history = [cycle(0, {"digit_flip": 2, "missing_value": 2}, {"digit_flip": 4}, {"tags.digit_flip": 6.0, "tags.missing_value": 1.0}),
               cycle(1, {}, {"near_miss_spelling": 3}, {"tags.digit_flip": 1.0, "tags.near_miss_spelling": 2.0}),
               cycle(2, {}, {}, {"tags.digit_flip": 1.0})]
    noise = {2: {"tags.digit_flip": 5.0, "tags.missing_value": 1.0}, 1: {"tags.digit_flip": 7.0}}
    changes = targeted_changes(history, noise)
    assert [(c.cycle, c.tag, c.before, c.after, c.seeds) for c in changes] == [
        (1, "digit_flip", 6.0, 1.0, (6.0, 7.0, 5.0)),  # the run's seed first, then the replicas by seed
        (1, "missing_value", 1.0, 0.0, (1.0, 0.0, 1.0)),
        (2, "near_miss_spelling", 2.0, 0.0, (0.0, 0.0, 0.0)),
    ]
    assert changes[0].band == pytest.approx(seed_band([6, 7, 5])) and changes[0].verdict == "within seed noise"
    assert changes[2].verdict.startswith("no verdict")
    md = render_loop_report(history, compose(FAST + ["loop.cycles=2"]), None, None, changes=changes)
    assert "| 1 | digit_flip | 6 | 1 | -5 | 6, 7, 5 | 6.1 | within seed noise |" in md
    # 2 of the 4 mined records were mined for a misreading (digit_flip); missing_value is a blank, not a misreading.
    assert "Mined for a misreading (digit_flip, near_miss_spelling, unit_confusion): 50% of the mined records" in md
    with pytest.raises(ValueError, match="loop.noise_seeds=-1"):
        noise_seeds(compose(FAST + ["loop.noise_seeds=-1"]))


def test_resume_refuses_a_changed_config(tmp_path):
    cfg = compose(FAST + ["loop.cycles=1"], tmp_path)
    state = load_state(tmp_path, cfg)
    assert state["finished"] == [] and "loop.cycles" not in state["config"]
    (tmp_path / STATE_FILE).write_text(json.dumps(state))
    load_state(tmp_path, compose(FAST + ["loop.cycles=3", "loop.on_empty_mine=stop"], tmp_path))  # allowed
    with pytest.raises(ValueError, match=r"different config \(loop.oversample: 2 -> 5\)"):
        load_state(tmp_path, compose(FAST + ["loop.cycles=1", "loop.oversample=5"], tmp_path))


def test_the_loops_options_are_checked_with_the_config_before_any_cycle():
    """run_loop trusts its config: what it once checked again at its start, composition refuses."""
    needs = "loop.cycles > 0 needs train.enabled=true and eval.enabled=true (each cycle trains and evaluates)"
    cases = {needs: ["train.enabled=false"], "loop.oversample=0": ["loop.oversample=0"],
             "loop.mine_per_tag=-1": ["loop.mine_per_tag=-1"], "loop.synth_per_tag=-2": ["loop.synth_per_tag=-2"]}
    for message, overrides in cases.items():
        with pytest.raises(ValueError, match=re.escape(message)):
            compose(FAST + ["loop.cycles=1", *overrides])
    with pytest.raises(ValueError, match=re.escape(needs)):
        compose(FAST + ["loop.cycles=2", "eval.enabled=false"])
    for overrides in (["train.enabled=false"], ["eval.enabled=false"]):
        compose(FAST + ["loop.cycles=0", *overrides])  # a single run may only train or only evaluate


def test_the_loop_package_exports_run_loop_and_nothing_borrowed():
    """Each name is imported from the module that defines it; the package itself offers run(cfg)'s entry only."""
    import types

    import vlmsweep.loop as package

    names = {n for n, v in vars(package).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert names == {"run_loop"} and package.__all__ == ["run_loop"]


# ----------------------------------------------------------------------------- end to end on the tiny model


class Crash(RuntimeError):
    pass


ORIGIN = re.compile(r"^(base|(mined|synth):\d+:(" + "|".join(TAGS) + "))$")
LOOP = FAST + ["loop.cycles=1", "loop.synth_per_tag=2", "loop.mine_per_tag=1", "eval.max_new_tokens=16", "loop.noise_seeds=1"]


@pytest.mark.slow
def test_two_cycles_end_to_end_with_a_crash_in_cycle_1_and_a_resume(tmp_path, tiny_path, monkeypatch):
    from vlmsweep.pipeline import stages
    from vlmsweep.run import run

    out = tmp_path / "loop"
    real_train, real_write = stages.train_stage, stages.write_stage
    events: list[tuple[str, str]] = []
    crash_in = {"cycle_1/mining"}  # the first write after cycle 1's training: killed mid-cycle

    def train_and_record(cfg, model, processor, records, out_dir, tracker, info, validation=None, hint_tokens=None):
        events.append(("train", Path(out_dir).name))
        return real_train(cfg, model, processor, records, out_dir, tracker, info, validation, hint_tokens=hint_tokens)

    def write_with_a_digit_flip(cfg, folder, metrics, samples, pass_metrics=None, appendix=""):
        # The random tiny model fails the contract, and whether its garbage also trips a data-fixable tag is
        # chance: fix the mining tags instead (the loop mines these same sample dicts). Cycle 0: one digit_flip,
        # so the hard set, synthesis, lineage and oversampling run for real; cycle 1: none, so the mine is empty.
        where = str(Path(folder).relative_to(out))
        events.append(("write", where))
        if where in crash_in:
            crash_in.discard(where)
            raise Crash("killed mid-cycle")
        if Path(folder).name == "mining":
            for s in samples:
                s["tags"] = [t for t in s["tags"] if t in UNFIXABLE_TAGS]
            if Path(folder).parent.name == "cycle_0":
                samples[0]["tags"].append("digit_flip")
        return real_write(cfg, folder, metrics, samples, pass_metrics, appendix=appendix)

    monkeypatch.setattr(stages, "train_stage", train_and_record)
    monkeypatch.setattr(stages, "write_stage", write_with_a_digit_flip)
    cfg = compose(LOOP, out)
    with pytest.raises(Crash):
        run(cfg)
    assert events == [("train", "cycle_0"), ("write", "cycle_0/mining"), ("write", "cycle_0/regression"),
                      ("write", "cycle_0"), ("train", "cycle_1"), ("write", "cycle_1/mining")]
    state = json.loads((out / "loop_state.json").read_text())
    assert (state["finished"], state["trained"]) == ([0], [0, 1])
    assert json.loads((out / "run_info.json").read_text())["status"] == "failed"
    assert not (out / "cycle_1" / "metrics.json").exists()
    frozen = {p: p.stat().st_mtime_ns for p in [out / "cycle_0" / "metrics.json", out / "cycle_0" / "adapter" / "adapter_model.safetensors",
                                                out / "cycle_1" / "adapter" / "adapter_model.safetensors"]}

    # Resume in the same folder: cycle 0 is reused, cycle 1's finished training is not repeated. Then cycle 0's
    # replica under seed 1 trains and is scored on the regression set alone: the seed-noise band.
    events.clear()
    metrics = run(compose(LOOP, out))
    assert events == [("write", "cycle_1/mining"), ("write", "cycle_1/regression"), ("write", "cycle_1"),
                      ("train", "seed_1"), ("write", "cycle_0/noise/seed_1/regression")]
    assert {p: p.stat().st_mtime_ns for p in frozen} == frozen
    replica = json.loads((out / "cycle_0" / "noise" / "seed_1" / "regression" / "metrics.json").read_text())
    assert replica["train.steps"] == json.loads((out / "cycle_0" / "metrics.json").read_text())["train.steps"] > 0

    # Hard set from cycle 0: the mined sample plus 2 synthetic digit documents, lineage on each.
    hard = list(read_manifest(out / "cycle_0" / "hard_set.jsonl"))
    assert [r.origin for r in hard] == ["mined:0:digit_flip", "synth:0:digit_flip", "synth:0:digit_flip"]
    assert hard[0].id.startswith("mining-") and all(r.id.startswith("targeted-digits-") for r in hard[1:])
    # Cycle 1 trains on the 4 base samples plus the hard set twice (loop.oversample=2).
    train1 = list(read_manifest(out / "cycle_1" / "train.jsonl"))
    assert Counter(r.origin.split(":")[0] for r in train1) == {"base": 4, "mined": 2, "synth": 4}
    held_out = list(read_manifest(out / "splits" / "test.jsonl")) + list(read_manifest(out / "splits" / "regression.jsonl"))
    for manifest in ["cycle_0/train.jsonl", "cycle_1/train.jsonl"]:
        lines = [json.loads(line) for line in (out / manifest).read_text().splitlines()]
        assert all(ORIGIN.match(line["origin"]) for line in lines), manifest
        assert {line["id"].split("#")[0] for line in lines}.isdisjoint({r.id for r in held_out})
        assert {line["seed"] for line in lines}.isdisjoint({r.seed for r in held_out})

    # Outputs: the last cycle's test metrics plus the loop summary; the report shows both cycles.
    cycle1 = json.loads((out / "cycle_1" / "metrics.json").read_text())
    assert {k: metrics[k] for k in cycle1} == cycle1
    assert (metrics["loop.cycles_done"], metrics["loop.hard_set_size"], metrics["loop.train_size"]) == (2.0, 3.0, 10.0)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    report = (out / "report.md").read_text()
    assert "| metric | better | cycle 0 | cycle 1 |" in report and "| tags.parse_fail | ↓ |" in report
    # Cycle 1 trained on a hard set that targeted digit_flip: its regression-set change, read against the band of
    # cycle 0's two seeds (the run's seed 0 and the replica's seed 1).
    reg = [json.loads((out / d / "regression" / "metrics.json").read_text()) for d in ("cycle_0", "cycle_1", "cycle_0/noise/seed_1")]
    before, after, replica = (m.get("tags.digit_flip", 0.0) for m in reg)
    assert metrics["loop.targeted.digit_flip.change"] == after - before and metrics["loop.noise_seeds"] == 1.0
    row = f"| 1 | digit_flip | {before:.0f} | {after:.0f} | {after - before:+.0f} | {before:.0f}, {replica:.0f} |"
    assert row in report, report
    assert metrics["loop.mined_misreading_share"] == 1.0  # the one mined record was mined for digit_flip
    assert "| 1 | 10 | 4 | 2 | 4 | 3 | ../cycle_0/adapter |" in report
    assert (out / "tags_over_cycles.png").stat().st_size > 0
    for d in ["cycle_0", "cycle_1"]:
        for f in ["samples.jsonl", "report.md", "mining/samples.jsonl", "mining/metrics.json", "regression/metrics.json"]:
            assert (out / d / f).is_file(), f"{d}/{f}"

    # Cycle 1 mined nothing: extending the loop with on_empty_mine=stop stops
    # cleanly before cycle 2, without loading a model.
    events.clear()
    metrics = run(compose(FAST + ["loop.cycles=2", "loop.synth_per_tag=2", "loop.mine_per_tag=1", "eval.max_new_tokens=16",
                                  "loop.on_empty_mine=stop", "loop.noise_seeds=1"], out))
    assert events == [] and not (out / "cycle_2").exists()  # the noise replica is reused too
    assert (metrics["loop.cycles_done"], metrics["loop.stopped_early"]) == (2.0, 1.0)
    assert "stopped before cycle 2: cycle 1 mined nothing and loop.on_empty_mine=stop" in (out / "report.md").read_text()


@pytest.mark.slow
def test_a_loop_killed_mid_cycle_resumes_without_redoing_finished_cycles(tmp_path):
    """A real SIGKILL of `python -m vlmsweep loop.cycles=1` in cycle 1, then the same command again."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO, TINY_RUN, vlmsweep

    out = tmp_path / "loop"
    args = ["loop.cycles=1", "loop.noise_seeds=1", *TINY_RUN, f"hydra.run.dir={out}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "vlmsweep", *args], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    state_file, deadline = out / "loop_state.json", time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state_file.exists() and 0 in json.loads(state_file.read_text()).get("finished", []):
            break
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)  # cycle 0 finished, cycle 1 under way
    proc.wait()
    assert not (out / "cycle_1" / "metrics.json").exists()
    cycle0 = out / "cycle_0" / "metrics.json"
    before = cycle0.stat().st_mtime_ns
    vlmsweep(*args, cwd=tmp_path)
    assert cycle0.stat().st_mtime_ns == before  # not recomputed
    assert json.loads(state_file.read_text())["finished"] == [0, 1]
    assert (out / "cycle_1" / "metrics.json").exists() and "cycle 1" in (out / "report.md").read_text()
