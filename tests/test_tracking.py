"""W&B offline: the run files hold tags, config, summary metrics and the per-sample table; never fatal."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import FAST, compose
from vlmsweep.pipeline import tracking
from vlmsweep.run import run

BLOCK = 32768  # .wandb files are LevelDB-style logs: 7-byte file header, 32 KiB blocks of records


def read_wandb_records(path):
    """Records of an offline .wandb file (wandb 0.31 ships no Python reader for them)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, records = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a header is padding
            pos += BLOCK - pos % BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        pos += 7
        buf += data[pos : pos + length]
        pos += length
        if kind in (1, 4):  # FULL or LAST fragment
            rec = pb.Record()
            rec.ParseFromString(buf)
            records.append(rec)
            buf = b""
    return records


def test_offline_wandb_run_has_the_expected_keys(tmp_path):
    overrides = [o for o in FAST if not o.startswith("tracker")] + ["tracker=wandb", "tracker.mode=offline"]
    metrics = run(compose(overrides, output_dir=tmp_path))
    files = list(tmp_path.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 1
    records = read_wandb_records(files[0])
    run_rec = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert {"quant=bf16", "scope=llm", "max_pixels=256tok"} <= set(run_rec.tags)
    config_keys = {i.key for i in run_rec.config.update}
    assert {"train", "quant", "scope", "data_mix"} <= config_keys
    summary = {}
    history_keys = set()
    for r in records:
        if r.WhichOneof("record_type") == "summary":
            summary.update({i.key: json.loads(i.value_json) for i in r.summary.update if i.key})
        if r.WhichOneof("record_type") == "history":
            history_keys |= {i.key or "/".join(i.nested_key) for i in r.history.item}
    assert summary["contract.strict_parse_rate"] == pytest.approx(metrics["contract.strict_parse_rate"])
    assert summary["train.loss"] == pytest.approx(metrics["train.loss"])
    assert any(k.startswith("train/loss") for k in history_keys)
    assert any(k.startswith("samples") for k in history_keys)  # the per-sample table
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/samples_*.table.json"))
    table = json.loads(tables[0].read_text())
    assert "raw" in table["columns"] and len(table["data"]) == 2


def test_tracker_failures_never_kill_the_run(tmp_path, monkeypatch):
    import wandb

    def unreachable(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(wandb, "init", unreachable)
    overrides = [o for o in FAST if not o.startswith("tracker")] + ["tracker=wandb", "tracker.mode=online"]
    metrics = run(compose(overrides, output_dir=tmp_path))
    assert "contract.strict_parse_rate" in metrics

    class Broken:
        summary: dict = {}

        def log(self, *a, **k):
            raise RuntimeError("socket closed")

        def finish(self, *a, **k):
            raise RuntimeError("socket closed")

    t = tracking.Tracker(Broken())
    t.log({"x": 1.0}, step=1)
    t.table("samples", [{"id": "a"}])
    t.finish()
    assert not t.active
