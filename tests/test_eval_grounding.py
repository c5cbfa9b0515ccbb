"""The chance baseline: each answer scored against other pages' targets, its margin, and the randomization test
tell a model that reads (answers match their own page) from one that guesses (the same answer for every page)."""

import pytest

from vlmsweep.evaluate import score_outputs
from vlmsweep.evaluate.grounding import PEERS, chance_summary, peers_of, randomization_test, summary_lines
from vlmsweep.evaluate.outputs import render_report
from vlmsweep.prompts import serialize


def receipt(k: int) -> dict:
    """Nine field slots, none shared between two values of k."""
    return {"store": f"Store {k}", "date": f"2024-01-0{k}", "address": f"{k} Main St",
            "items": [{"name": f"Item{k}", "quantity": k, "price": f"{k}.50"}],
            "subtotal": f"{k}0.00", "tax": f"{k}.10", "total": f"{k}1.10"}


RECORDS = [{"id": f"r{k}", "domain": "receipt", "target": receipt(k)} for k in (1, 2, 3)]


def margins(samples):
    return [s["scores"]["content.field_em_margin"] for s in samples]


def test_a_reader_scores_its_page_and_nothing_by_chance():
    metrics, samples = score_outputs([serialize(r["target"]) for r in RECORDS], RECORDS)
    assert margins(samples) == [1.0, 1.0, 1.0]
    assert metrics["content.field_em_margin"] == 1.0
    test = randomization_test(samples)
    assert (test.observed, test.chance, test.p_value, test.samples) == (1.0, 0.0, 1 / 1000, 3)
    assert test.depends_on_page


def test_the_same_answer_for_every_page_has_a_margin_of_exactly_zero():
    metrics, samples = score_outputs([serialize(receipt(1))] * 3, RECORDS)
    # own scores 1, 0, 0; against the two other pages: 0 (r1), 1/2 (r2: r1 matches), 1/2 (r3)
    assert margins(samples) == [1.0, -0.5, -0.5]
    assert metrics["content.field_em_margin"] == 0.0
    assert [s["chance"]["content.field_em"] for s in samples] == [[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    test = randomization_test(samples)
    assert test.margin == pytest.approx(0.0) and not test.depends_on_page and test.p_value > 0.3


def test_a_partly_read_answer_gains_what_it_read():
    answer = dict(receipt(1), store="Store 2")  # 8 of 9 slots of its page, 1 of page 2's, none of page 3's
    _, samples = score_outputs([serialize(answer), serialize(receipt(2)), serialize(receipt(3))], RECORDS)
    assert samples[0]["scores"]["content.field_em_margin"] == pytest.approx(8 / 9 - (1 / 9 + 0) / 2)


def test_peers_share_the_asked_and_the_image_domain_and_never_include_the_page():
    samples = [{"id": "a", "domain": "prescription_ko"}, {"id": "b", "domain": "prescription_ko"},
               {"id": "hn1", "domain": "prescription_ko", "image_domain": "receipt"},
               {"id": "hn2", "domain": "prescription_ko", "image_domain": "receipt"}, {"id": "alone", "domain": "receipt"}]
    assert peers_of(samples) == [[1], [0], [3], [2], []]
    big = [{"id": f"s{i}", "domain": "receipt"} for i in range(50)]
    peers = peers_of(big)
    assert all(len(p) == PEERS and i not in p and len(set(p)) == PEERS for i, p in enumerate(peers))
    assert peers == peers_of(big) and peers[0] != peers[1]  # seeded by the id: the same on every run


def test_no_answer_or_no_peer_has_no_margin_and_the_report_says_which_case_it_is():
    records = RECORDS + [{"id": "alone", "domain": "prescription_ko", "target": {"patient_name": "x"}}]
    _, samples = score_outputs(["not json", serialize(receipt(2)), serialize(receipt(3)), "{}"], records)
    assert samples[0]["scores"]["content.field_em_margin"] is None  # no answer object
    assert samples[3]["scores"]["content.field_em_margin"] is None  # no other page of its domain
    metrics, read = score_outputs([serialize(r["target"]) for r in RECORDS], RECORDS)
    report = render_report(metrics, read)
    assert "**The answers depend on the page**" in report and "| content.field_em | 1.000 | 0.000 | +1.000 | 0.001 | 3 |" in report
    metrics, guessed = score_outputs([serialize(receipt(1))] * 3, RECORDS)
    assert "**The answers do not depend on the page**" in render_report(metrics, guessed)
    assert "1 distinct outputs for 3 pages" in "\n".join(summary_lines(guessed))


def test_the_summary_a_loop_cycle_keeps_is_the_test_with_the_distinct_outputs():
    _, samples = score_outputs([serialize(receipt(1))] * 3, RECORDS)
    summary = chance_summary(samples)
    assert summary["own"] == pytest.approx(1 / 3) and summary["chance"] == pytest.approx(1 / 3)
    assert (summary["distinct_outputs"], summary["pages"], summary["samples"]) == (1, 3, 3)
    assert chance_summary(samples[:0]) is None
