"""train.loss_impl: chunked equals eager (loss and LoRA gradients) on the embedded model, keeps no logits in the
graph, and the CUDA-only implementations fail with one line that says what to do."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor

from vlmsweep.config import LoraConfig, ModelConfig, QuantConfig, ScopeConfig
from vlmsweep.data import Record
from vlmsweep.model.load import attach_lora, load_base_model
from vlmsweep.train import loss as loss_mod
from vlmsweep.train.collator import Collator
from vlmsweep.train.loss import OutputLayerLoss, chunked_linear_cross_entropy, loss_impl_error


def _batch(model_path, tmp_path):
    processor = AutoProcessor.from_pretrained(model_path)
    recs = []
    for i in range(2):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (112, 112), (255, 255 - 40 * i, 255)).save(path)
        target = {"patient_id": f"1234{i}", "patient_name": "홍길동" * (i + 1)}  # two answer lengths
        recs.append(Record(id=str(i), image=path, domain="prescription_ko", target=target, image_domain="prescription_ko"))
    return Collator(processor, False, True, 4 * 784, 16 * 784, 512)(recs)


def _loss_and_grads(model, batch, impl: str, chunk: int = 256):
    fn = OutputLayerLoss(impl, chunk)
    model.zero_grad(set_to_none=True)
    with fn.attached(model):
        outputs = model(**{k: v for k, v in batch.items() if k != "labels"})
        loss = fn(outputs, batch["labels"])
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, outputs.logits.shape


def test_chunked_equals_eager_on_the_embedded_model_loss_and_lora_gradients(warm_path, tmp_path):
    base = load_base_model(ModelConfig(name="tiny_warm"), QuantConfig(name="fp32"), str(warm_path))
    model = attach_lora(base, ScopeConfig(name="llm", parts=["llm"]), LoraConfig(r=4, alpha=8, dropout=0.0), seed=0)
    with torch.no_grad():  # B starts at zero; move it so that every LoRA matrix gets a gradient
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    batch = _batch(warm_path, tmp_path)
    n = len(batch["labels"])
    eager, eager_grads, eager_logits = _loss_and_grads(model, batch, "eager")
    chunk = 16  # several chunks and a short last one
    assert n % chunk and n > 2 * chunk
    chunked, chunked_grads, chunked_logits = _loss_and_grads(model, batch, "chunked", chunk)
    vocab = base.config.text_config.vocab_size
    assert eager_logits == (n, vocab) and chunked_logits == (0, vocab)  # chunked: the model computed no logits
    assert abs(chunked.item() - eager.item()) < 1e-5
    assert eager_grads.keys() == chunked_grads.keys() and len(eager_grads) == 2 * 2 * 7  # A, B x 2 layers x 7
    worst = max((chunked_grads[k] - eager_grads[k]).abs().max().item() for k in eager_grads)
    assert worst < 1e-5 and all(g.abs().max() > 0 for g in eager_grads.values())
    # the hook is gone after training: the output layer computes logits again
    with torch.no_grad():
        assert model(**{k: v for k, v in batch.items() if k != "labels"}).logits.shape == (n, vocab)


def test_chunked_gradient_of_a_trained_output_layer_equals_eager():
    """A full fine-tune trains the (tied) output layer: its gradient is summed over the chunks."""
    torch.manual_seed(0)
    hidden = torch.randn(37, 16, requires_grad=True)
    weight = torch.randn(1000, 16, requires_grad=True)
    labels = torch.randint(0, 1000, (37,))
    ref = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight), labels, reduction="sum")
    ref_h, ref_w = torch.autograd.grad(ref, (hidden, weight))
    got = chunked_linear_cross_entropy(hidden, weight, labels, chunk=5)
    got_h, got_w = torch.autograd.grad(got * 3.0, (hidden, weight))  # backward scales by the upstream gradient
    assert abs(got.item() - ref.item()) < 1e-4 * ref.item()
    assert torch.allclose(got_h, 3 * ref_h, atol=1e-5) and torch.allclose(got_w, 3 * ref_w, atol=1e-5)


def test_chunked_keeps_no_logits_for_backward():
    """What autograd saves for backward: eager keeps (n, vocab) logits; chunked only (n, hidden) gradients."""
    torch.manual_seed(0)
    n, h, vocab = 64, 16, 20_000
    hidden = torch.randn(n, h, requires_grad=True)
    weight = torch.randn(vocab, h)
    labels = torch.randint(0, vocab, (n,))
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        torch.nn.functional.cross_entropy(torch.nn.functional.linear(hidden, weight), labels, reduction="sum")
    assert sum(saved) >= n * vocab * 4
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        chunked_linear_cross_entropy(hidden, weight, labels, chunk=16)
    assert 0 < sum(saved) <= n * h * 4


def test_cuda_implementations_say_what_to_do(monkeypatch):
    for impl, package in (("liger", "liger-kernel"), ("cce", "cut-cross-entropy")):
        monkeypatch.setattr(loss_mod.importlib.util, "find_spec", lambda name: None)
        assert loss_impl_error(impl) == (f"train.loss_impl={impl} needs the {package} package: pip install "
                                         f"'vlmsweep[{impl}]' (CUDA only), or use train.loss_impl=chunked")
        monkeypatch.setattr(loss_mod.importlib.util, "find_spec", lambda name: object())
        assert loss_impl_error(impl, cuda=False) == (f"train.loss_impl={impl} runs on CUDA only (Triton kernels) and "
                                                     "no GPU is visible: use train.loss_impl=chunked")
        assert loss_impl_error(impl, cuda=True) is None
    assert loss_impl_error("chunked", cuda=False) is None and loss_impl_error("eager", cuda=False) is None


def test_a_run_with_a_cuda_loss_on_the_cpu_fails_before_loading_and_bad_options_fail_at_composition(tmp_path, monkeypatch):
    from conftest import FAST, compose
    from vlmsweep import run as run_module

    with pytest.raises(ValueError, match=r"train.loss_impl='fused': expected one of eager, chunked, liger, cce"):
        compose(["train.loss_impl=fused"])
    with pytest.raises(ValueError, match=r"train.loss_chunk=0: expected a positive number"):
        compose(["train.loss_chunk=0"])
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: liger/cce may run here")
    monkeypatch.setattr(run_module, "prepare_run", lambda *a: pytest.fail("the run went past the loss check"))
    with pytest.raises(ValueError, match=r"^train.loss_impl=cce (needs the cut-cross-entropy package|runs on CUDA only)"):
        run_module.run(compose(FAST + ["train.loss_impl=cce"], tmp_path / "run"))
