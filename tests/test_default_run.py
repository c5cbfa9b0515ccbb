"""README command 1, `python -m vlmsweep`, as a new user runs it: the shipped model assembled into the cache (here
once more, from a damaged copy) and the run's metrics.json equal to the README's table, parsed from the README so the
two cannot drift. One full default run (about a minute on 2 cores): the figures the README promises are checked."""

from __future__ import annotations

import json
import os
import re

import pytest

from userdata import REPO, run_dir, vlmsweep

from vlmsweep.model.shipped import ensure_warm_model


def readme_table() -> dict[str, str]:
    """The README's table of the default run's metrics.json: metric name -> value as printed (3 decimals; counts
    for the failure tags)."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    table = text.split("That run's `metrics.json`:", 1)[1].split("\n\n", 2)[1]
    expected = {}
    for row in table.splitlines()[2:]:
        first, value = (c.strip() for c in row.strip("|").split("|")[:2])
        value = value.replace("\u2212", "-").replace("+", "")  # the README's signs
        if first == "failure tags":
            expected |= {f"tags.{tag}": count for tag, count in re.findall(r"([a-z_]+) (\d+)", value)}
            continue
        names = re.findall(r"`([^`]+)`", first)
        prefix = names[0].rsplit(".", 1)[0]
        numbers = re.findall(r"-?\d+\.\d+", value)
        numbers = numbers * len(names) if len(numbers) == 1 else numbers  # "1.000 (64/64)" for three rates
        expected |= {n if "." in n else f"{prefix}.{n}": printed(float(v)) for n, v in zip(names, numbers)}
    return expected


def printed(value: float) -> str:
    """A rate as the README prints it: 3 decimals, and no sign on a zero (the README's -0.000 is the 0.000 here)."""
    return f"{value:.3f}".replace("-0.000", "0.000")


def test_the_readme_table_parses_into_the_metrics_it_names():
    expected = readme_table()
    assert {"contract.strict_parse_rate", "contract.schema_valid_rate", "content.field_em", "content.digit_acc",
            "content.field_em_margin"} <= expected.keys()
    assert any(k.startswith("tags.") for k in expected)


@pytest.mark.slow
def test_the_default_command_from_a_damaged_cache_gives_the_readmes_table(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    weights = ensure_warm_model(cache) / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)  # issue #37: a cut cached model used to crash in safetensors
    monkeypatch.setenv("VLMSWEEP_CACHE", str(cache))
    proc = vlmsweep([], tmp_path)  # README command 1, from a folder outside the checkout
    assert f"{weights.parent} is damaged (model.safetensors has" in proc.stdout + proc.stderr
    out = tmp_path / run_dir(proc)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    expected = readme_table()
    got = {k: f"{metrics[k]:.0f}" if k.startswith("tags.") else printed(metrics[k]) for k in expected}
    got |= {k: f"{v:.0f}" for k, v in metrics.items() if k.startswith("tags.") and v}  # and no tag it leaves out
    assert got == expected
