"""vlmsweep/train/trainer.py on the embedded replica: what one training step computes, keeps and refuses."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from conftest import FAST, compose
from vlmsweep.data import Record
from vlmsweep.model.load import attach_lora, load_base_model
from vlmsweep.train import trainer as trainer_mod
from vlmsweep.train.collator import make_collator

TRAIN = FAST + ["model=tiny", "quant=fp32", "max_pixels=64tok", "train.max_steps=2", "train.batch_size=2"]


def records(folder, n: int = 4) -> list[Record]:
    out = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.new("RGB", (112, 140), (255, 255 - 40 * i, 255)).save(path)
        target = {"patient_id": f"1234{i}", "patient_name": "홍길동" * (i % 2 + 1)}  # two answer lengths
        out.append(Record(id=str(i), image=path, domain="prescription_ko", target=target, image_domain="prescription_ko"))
    return out


def setup(tiny_path, tmp_path, overrides: list[str]):
    cfg = compose(TRAIN + overrides, output_dir=tmp_path)
    base = load_base_model(cfg.model, cfg.quant, str(tiny_path), cfg.train.grad_checkpointing)
    from vlmsweep.model.load import load_processor

    model = attach_lora(base, cfg.scope, cfg.lora, cfg.seed)
    return cfg, model, make_collator(cfg, load_processor(str(tiny_path)))


def visual(model) -> torch.nn.Module:
    return model.get_base_model().model.visual


@pytest.mark.parametrize("scope", ["llm", "llm_projector", "all"])
def test_a_frozen_vision_tower_runs_once_per_step_outside_the_graph(tiny_path, tmp_path, scope):
    cfg, model, collator = setup(tiny_path, tmp_path, [f"scope={scope}", "train.grad_checkpointing=true"])
    tower = visual(model)
    calls, grads = [], []
    for block in tower.blocks:  # a checkpointed block's recompute runs its forward (not its hooks) and stops early
        block.norm1.register_forward_pre_hook(lambda m, args: calls.append(torch.is_grad_enabled()))
    tower.register_forward_hook(lambda m, args, out: grads.append(getattr(out, "pooler_output", out).requires_grad))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad and ".visual." in n}
    trainer_mod.train(model, collator, records(tmp_path), cfg, tmp_path)
    steps, blocks = cfg.train.max_steps, len(tower.blocks)
    if scope == "llm":  # one forward per block per step, none recomputed in backward; nothing flows into the tower
        assert len(calls) == steps * blocks and not any(calls)
        assert grads == [False] * steps
        assert all(p.grad is None for p in tower.parameters())
    elif scope == "llm_projector":  # the merger trains on the output of frozen blocks, which run once, without a graph
        assert len(calls) == steps * blocks and not any(calls)
        assert grads == [True] * steps  # the merger's output carries its graph
        assert all(p.grad is None for p in tower.blocks.parameters()) and all(
            p.grad is None for p in tower.patch_embed.parameters())
        changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
        assert changed and all(".merger." in n for n in changed)
    else:  # the vision LoRA trains: the graph is recorded, the checkpointed blocks run again in backward
        assert len(calls) == 2 * steps * blocks and all(calls) and grads == [True] * steps
        changed = [n for n, p in model.named_parameters() if n in before and not torch.equal(p, before[n])]
        assert any(".blocks." in n and "lora_B" in n for n in changed)
    assert "forward" not in vars(tower) and not any("forward" in vars(b) for b in tower.blocks)  # the wrappers are gone


@pytest.mark.parametrize("impl", ["eager", "chunked"])
def test_several_gpus_in_one_process_are_refused_for_every_loss(tmp_path, monkeypatch, impl):
    from transformers import TrainingArguments

    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 2))  # Kaggle's 2 x T4, no launcher
    cfg = compose(TRAIN + [f"train.loss_impl={impl}"], output_dir=tmp_path)
    with pytest.raises(ValueError, match=r"2 GPUs in one process .*DataParallel.*torchrun --nproc_per_node=2.*"
                                         r"accelerate launch"):
        trainer_mod.train(None, None, [], cfg, tmp_path)


def test_the_first_non_finite_loss_stops_training_naming_the_step_and_dtype(tiny_path, tmp_path):
    cfg, model, collator = setup(tiny_path, tmp_path, ["train.max_steps=3", "train.batch_size=1"])
    forwards = []

    def nan_from_the_second_forward(module, args, out):  # an fp16 overflow, say, in the last norm
        forwards.append(1)
        return out * float("nan") if len(forwards) >= 2 else out

    model.get_base_model().model.language_model.norm.register_forward_hook(nan_from_the_second_forward)
    with pytest.raises(trainer_mod.NonFiniteLoss, match=r"the training loss is nan at step 2 \(quant\.dtype=float32\)"):
        trainer_mod.train(model, collator, records(tmp_path), cfg, tmp_path)
    assert len(forwards) == 2  # stopped there, not at evaluation hours later


def test_num_items_in_batch_counts_every_target_of_the_accumulated_micro_batches(tiny_path, tmp_path, monkeypatch):
    from vlmsweep.train.loss import OutputLayerLoss

    calls = []
    call = OutputLayerLoss.__call__

    def spy(self, outputs, labels, num_items_in_batch=None):
        calls.append((labels.numel(), int(num_items_in_batch)))
        return call(self, outputs, labels, num_items_in_batch)

    monkeypatch.setattr(OutputLayerLoss, "__call__", spy)
    cfg, model, collator = setup(tiny_path, tmp_path, ["train.max_steps=1", "train.batch_size=1", "train.grad_accum=2"])
    trainer_mod.train(model, collator, records(tmp_path, 2), cfg, tmp_path)
    # the labels are the shifted targets already: the denominator is their count, not one less per micro-batch
    assert len(calls) == 2 and calls[0][1] == calls[1][1] == calls[0][0] + calls[1][0]


def test_collation_in_worker_processes_keeps_the_supervised_fraction_true(tiny_path, tmp_path):
    fractions = {}
    for workers in (0, 2):
        out = tmp_path / f"workers-{workers}"
        out.mkdir()
        cfg, model, collator = setup(tiny_path, out, [f"train.num_workers={workers}"])
        logged = []
        _, metrics = trainer_mod.train(model, collator, records(tmp_path), cfg, out,
                                       sink=lambda logs, step: logged.append(logs["train/supervised_fraction"]))
        fractions[workers] = metrics["train.supervised_fraction"]
        assert 0 < fractions[workers] < 1 and logged and all(0 < f < 1 for f in logged)
    assert fractions[2] == pytest.approx(fractions[0])  # the same batches, counted where the model trains
