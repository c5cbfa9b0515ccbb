"""The warmed model the package ships (vlmsweep.model.shipped): its files, their assembly into the cache, the check a
cached model passes before use (vlmsweep.model.cache)."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest
import torch
from safetensors.torch import load_file

from vlmsweep.model import shipped
from vlmsweep.model.cache import MANIFEST, damage, safetensors_damage
from vlmsweep.model.shipped import EMBED, ROWS, SHIPPED_DIR, UNUSED, WEIGHTS
from vlmsweep.recipes.warmup import Recipe


def test_the_package_ships_a_few_mib_of_trained_tensors_with_a_card_and_checksums():
    assert (SHIPPED_DIR / WEIGHTS).stat().st_size < 10 * 2**20
    shipped.check_shipped()  # SHA256SUMS holds
    tensors = load_file(SHIPPED_DIR / WEIGHTS)
    assert tensors[ROWS].shape[0] < 5000 and tensors[UNUSED].shape == (128,)
    assert any(k.startswith("model.layers.") for k in tensors) and any(k.startswith("visual.merger.") for k in tensors)
    recorded = json.loads((SHIPPED_DIR / "warmup.json").read_text(encoding="utf-8"))
    assert recorded["recipe"] == Recipe().key() and "cores" in recorded["machine"]  # today's recipe, and where it ran
    card = (SHIPPED_DIR / "README.md").read_text(encoding="utf-8")
    assert "It does not read" in card and "## As shipped" in card and recorded["machine"] in card


@pytest.fixture(scope="module")
def assembled(tmp_path_factory):
    cache = tmp_path_factory.mktemp("shipped-cache")
    started = time.perf_counter()
    folder = shipped.ensure_warm_model(cache)
    return folder, time.perf_counter() - started


def test_the_assembled_folder_is_the_release_layout_with_the_shipped_tensors(assembled, tiny_path):
    from transformers import Qwen2VLForConditionalGeneration

    folder, seconds = assembled
    assert seconds < 60  # seconds on 2 busy cores: the tokenizer files are most of it
    assert folder.name == f"tiny-warm-{shipped.shipped_key()}"
    raw_files = {p.name for p in tiny_path.iterdir()} - {MANIFEST}
    assert {p.name for p in folder.iterdir()} == raw_files | {"README.md", "warmup.json", MANIFEST}
    for name in raw_files - {"model.safetensors"}:  # config.json in the release's 4.x layout, template, tokenizer
        assert (folder / name).read_bytes() == (tiny_path / name).read_bytes(), name
    package, model = load_file(SHIPPED_DIR / WEIGHTS), load_file(folder / "model.safetensors")
    assert model.keys() == load_file(tiny_path / "model.safetensors").keys()  # the release's (4.x) names
    rows = package[ROWS].long()
    assert torch.equal(model[EMBED][rows], package[shipped.VALUES])
    unused = torch.ones(len(model[EMBED]), dtype=torch.bool)
    unused[rows] = False
    assert (model[EMBED][unused] == package[UNUSED]).all()  # the rule: one stored vector, no random generator
    assert all(torch.equal(model[k], t) for k, t in package.items() if k in model)
    _, info = Qwen2VLForConditionalGeneration.from_pretrained(str(folder), output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched keys


def test_a_damaged_cached_model_is_checked_and_built_again(assembled, tmp_path, monkeypatch, caplog):
    folder, _ = assembled
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    copy = cache / "models" / folder.name
    shutil.copytree(folder, copy, copy_function=shutil.copy2)  # copy2: the recorded modification times hold
    assert damage(copy) is None and shipped.ensure_warm_model(cache) == copy
    weights = copy / "model.safetensors"
    whole = weights.read_bytes()

    with open(weights, "r+b") as f:  # a byte changed, same size: the hash of a file written to since says so
        f.seek(len(whole) // 2)
        f.write(bytes([whole[len(whole) // 2] ^ 1]))
    assert "sha256" in damage(copy)
    os.truncate(weights, len(whole) // 2)
    assert "model.safetensors has" in damage(copy)
    assert "bytes where its header says" in safetensors_damage(weights)  # a folder without files.json: the header
    with caplog.at_level("WARNING"):
        assert shipped.ensure_warm_model(cache) == copy
    assert f"{copy} is damaged" in caplog.text
    assert damage(copy) is None and weights.read_bytes() == whole


def test_a_damaged_package_is_named_and_never_assembled(tmp_path):
    package = tmp_path / "shipped"
    package.mkdir()
    for p in SHIPPED_DIR.iterdir():
        if p.is_file():  # the default model's files (reader/ holds the other shipped model's)
            (package / p.name).write_bytes(p.read_bytes())
    with open(package / WEIGHTS, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(RuntimeError, match=f"{WEIGHTS} does not match .*reinstall vlmsweep"):
        shipped.ensure_warm_model(tmp_path / "cache", package)
    assert not list((tmp_path / "cache" / "models").glob("tiny-warm-*"))
