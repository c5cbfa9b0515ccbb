"""Where each split comes from: the user's manifest, the synthetic mix, both on purpose, or nothing when unused."""

from __future__ import annotations

import dataclasses

import pytest

from userdata import write_user_data
from vlmsweep.config import DataConfig, DataMixConfig
from vlmsweep.data import LeakageError, check_no_leak, load_splits, needed_splits, read_manifest

MIX = DataMixConfig(name="rx_receipt_1_1_1", weights={"prescription_ko": 1, "prescription_zh": 1, "receipt": 1})


def test_a_run_reads_only_the_splits_it_uses():
    assert needed_splits(train=True, evaluate=True, loop=False) == ("train", "test")
    assert needed_splits(train=False, evaluate=True, loop=False) == ("test",)
    assert needed_splits(train=True, evaluate=True, loop=True) == ("train", "test", "mining", "regression")


def test_manifests_replace_splits_unused_ones_are_not_read_and_synthetic_is_added_only_on_purpose(tmp_path, caplog):
    m = write_user_data(tmp_path)
    data = DataConfig(train_size=2, test_size=2, train_manifest=str(m["train"]),
                      mining_manifest=str(tmp_path / "absent.jsonl"))  # unused without a loop: never opened
    splits = load_splits(data, MIX, tmp_path / "cache", ("train", "test"))
    assert [r.id for r in splits["train"]] == ["rx-ko-001", "rx-zh-001"]
    assert {r.origin for r in splits["train"]} == {"manifest"}
    assert len(splits["test"]) == 2 and {r.origin for r in splits["test"]} == {"base"}  # synthetic
    assert splits.sources["train"] | {"manifest": None} == {"manifest": None, "from_manifest": 2, "skipped": [],
                                                            "synthetic": 0, "nfc_normalized": []}
    assert splits["mining"] == [] and "mining" not in splits.sources
    assert "data.mining_manifest" in caplog.text and "not read" in caplog.text

    mixed = load_splits(dataclasses.replace(data, add_synthetic=True), MIX, tmp_path / "cache", ("train",))
    assert [r.origin for r in mixed["train"]] == ["manifest", "manifest", "base", "base"]
    assert mixed.sources["train"]["from_manifest"] == 2 and mixed.sources["train"]["synthetic"] == 2


def test_the_guard_catches_a_users_test_image_copied_or_re_encoded_into_training(tmp_path):
    from PIL import Image

    m = write_user_data(tmp_path)
    test = list(read_manifest(m["test"]))
    train = list(read_manifest(m["train"]))
    check_no_leak(train, {"test": test}, "this run")  # disjoint: no error
    img = tmp_path / "my_data" / "images"
    Image.open(test[0].image).convert("RGB").save(img / "copy.jpg", quality=70)  # same page, re-encoded
    (img / "bytes.png").write_bytes(test[1].image.read_bytes())  # same bytes, another name
    leaky = [dataclasses.replace(train[0], id="u1", image=img / "copy.jpg"),
             dataclasses.replace(train[1], id="u2", image=img / "bytes.png")]
    with pytest.raises(LeakageError) as err:
        check_no_leak(train + leaky, {"test": test}, "this run")
    msg = str(err.value)
    assert msg.startswith("this run: 2 training sample(s) would leak")
    assert f"u1 (origin manifest) = test id {test[0].id} (near-duplicate image, perceptual hash" in msg
    assert f"u2 (origin manifest) = test id {test[1].id} (same image bytes)" in msg
    check_no_leak(train + leaky[:1], {"test": test}, "this run", near_duplicate_bits=-1)  # the check can be turned off
