"""build_split / generate_targeted: rendering, determinism across calls, cache reuse, atomic cache, CLI."""

import json
from collections import Counter

import pytest

from vlmsweep.config import DataMixConfig
from vlmsweep.data import build, build_split, empty_target, generate_targeted, load_image, read_manifest, schema_errors
from vlmsweep.cli.data import main as cli
from vlmsweep.data.record import RECEIPT_DOMAINS

MIX = DataMixConfig(name="rx_receipt_1_1_1", hard_negatives=0.25)


def test_build_split_renders_valid_records_and_reuses_the_cache(tmp_path, monkeypatch):
    recs = build_split("test", 8, MIX, seed=3, cache_dir=tmp_path)
    assert [r.id for r in recs] == [f"test-{i:05d}" for i in range(8)]
    assert Counter((r.domain == r.image_domain) for r in recs) == {True: 6, False: 2}  # 25% hard negatives
    for r in recs:
        schema = "receipt" if r.domain in RECEIPT_DOMAINS else "prescription"
        assert schema_errors(schema, r.target) == [] and r.origin == "base" and isinstance(r.seed, int)
        assert load_image(r.image).mode == "RGB" and r.image.is_absolute()
        if r.domain != r.image_domain:
            assert r.image_domain in RECEIPT_DOMAINS and r.target == empty_target("prescription")
    # Nothing half-written is left beside the cache entry.
    entries = list((tmp_path / "datasets").iterdir())
    assert len(entries) == 1 and not entries[0].name.startswith(".tmp")
    # Second call: served from the cache without rendering anything.
    monkeypatch.setattr(build, "render_records", lambda *a, **k: pytest.fail("re-rendered a cached split"))
    again = build_split("test", 8, MIX, seed=3, cache_dir=tmp_path)
    assert again == recs


def test_same_definition_gives_identical_files_in_another_cache(tmp_path):
    a = build_split("mining", 4, MIX, seed=1, cache_dir=tmp_path / "a", noise="light")
    b = build_split("mining", 4, MIX, seed=1, cache_dir=tmp_path / "b", noise="light")
    assert [r.target for r in a] == [r.target for r in b]
    assert [r.image.read_bytes() for r in a] == [r.image.read_bytes() for r in b]
    c = build_split("mining", 4, MIX, seed=1, cache_dir=tmp_path / "a", noise="none")  # other noise: new entry
    assert len(list((tmp_path / "a" / "datasets").iterdir())) == 2 and c[0].image != a[0].image


def test_crashed_render_leaves_no_cache_entry(tmp_path, monkeypatch):
    def boom(jobs, folder, noise, **kw):
        (folder / "images").mkdir()
        (folder / "images" / "half.jpg").write_bytes(b"x")
        raise RuntimeError("killed mid-render")
    monkeypatch.setattr(build, "render_records", boom)
    with pytest.raises(RuntimeError):
        build_split("train", 4, MIX, seed=0, cache_dir=tmp_path)
    assert list((tmp_path / "datasets").iterdir()) == []


def test_lost_race_uses_the_winners_copy(tmp_path, monkeypatch):
    real = build.render_records

    def racing(jobs, folder, noise, **kw):
        # Another process finishes the same entry while we render.
        monkeypatch.setattr(build, "render_records", real)
        build_split("train", 3, MIX, seed=9, cache_dir=tmp_path)
        return real(jobs, folder, noise, **kw)
    monkeypatch.setattr(build, "render_records", racing)
    recs = build_split("train", 3, MIX, seed=9, cache_dir=tmp_path)
    assert len(recs) == 3 and len(list((tmp_path / "datasets").iterdir())) == 1


def test_generate_targeted_focuses(tmp_path):
    hn = generate_targeted("hard_negative", 4, seed=2, cache_dir=tmp_path)
    assert [r.domain for r in hn] == ["prescription_ko", "prescription_zh"] * 2
    assert [r.image_domain for r in hn] == ["receipt", "receipt_ko", "receipt_zh", "receipt"]  # languages in turn
    assert all(r.target == empty_target("prescription") for r in hn)
    units = generate_targeted("units", 3, seed=2, cache_dir=tmp_path, domains=("prescription_zh",))
    assert all(r.domain == "prescription_zh" and r.origin == "base" and r.seed is not None for r in units)
    assert len({r.id for r in hn} | {r.id for r in units}) == 7
    with pytest.raises(ValueError, match="noise='heavy'"):
        generate_targeted("digits", 2, seed=2, cache_dir=tmp_path, noise="heavy")


def test_cli_render_writes_manifest_images_and_contact_sheet(tmp_path, capsys):
    out = tmp_path / "ds"
    assert cli(["render", "--out", str(out), "--n", "5", "--mix", "medical_only", "--noise", "light"]) == 0
    recs = read_manifest(out / "manifest.jsonl")
    assert len(recs) == 5 and {r.domain for r in recs} == {"prescription_ko", "prescription_zh"}
    assert (out / "contact_sheet.png").stat().st_size > 10_000
    line = json.loads((out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert line["image"].startswith("images/")
    assert cli(["check", str(out / "manifest.jsonl")]) == 0
    assert "5 usable records" in capsys.readouterr().out
    (out / "manifest.jsonl").write_text("{bad\n", encoding="utf-8")
    assert cli(["check", str(out / "manifest.jsonl")]) == 1  # problems found: listed, each with file:line
    assert "manifest.jsonl:1: not valid JSON" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["render", "check", "sroie"])
def test_every_flag_of_the_data_commands_says_what_it_does(command):
    import argparse

    from vlmsweep.cli.data import parser

    with pytest.raises(SystemExit) as done:
        cli([command, "--help"])
    assert done.value.code == 0
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction)).choices[command]
    silent = [a.dest for a in sub._actions if not a.help]
    assert silent == [], f"{command}: flags without help text: {silent}"
