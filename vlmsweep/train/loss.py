"""The training loss from hidden states: `train.loss_impl` picks how the output layer and cross-entropy are computed.

  eager    the output layer's logits at the supervised positions (n_supervised, vocab), then cross-entropy
           (the reference: what HF computes, with logits only where there is a target)
  chunked  pure torch: the same loss and gradients, computed `train.loss_chunk` rows of logits at a time; the
           autograd graph keeps no logits (the default, CPU and GPU)
  liger    Liger-Kernel's fused linear cross-entropy (Triton, CUDA only)
  cce      Apple's Cut Cross-Entropy (Triton, CUDA only)

For every implementation but eager the output layer computes nothing in the model's forward: a pre-hook on it
(installed for the length of training by `OutputLayerLoss.attached`) keeps its input, the hidden states already
cut to the supervised positions by the batch's `logits_to_keep`, and hands the layer an empty batch; the loss
then takes those hidden states and the layer's weight. The model's forward still runs whole, so DDP, peft and
gradient checkpointing see an ordinary forward.
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

from vlmsweep.config import LOSS_IMPLS
from vlmsweep.train.collator import masked_lm_loss

# Optional packages of the CUDA implementations: (import name, pip name of the extra).
_PACKAGES = {"liger": ("liger_kernel", "liger-kernel"), "cce": ("cut_cross_entropy", "cut-cross-entropy")}


def loss_impl_error(impl: str, cuda: bool | None = None) -> str | None:
    """None if `train.loss_impl=impl` can run here; else one line naming the option and what to do."""
    if impl not in LOSS_IMPLS:
        return f"train.loss_impl={impl!r}: expected one of {', '.join(LOSS_IMPLS)}"
    if impl not in _PACKAGES:
        return None
    module, package = _PACKAGES[impl]
    if importlib.util.find_spec(module) is None:
        return (f"train.loss_impl={impl} needs the {package} package: pip install 'vlmsweep[{impl}]' (CUDA only), "
                "or use train.loss_impl=chunked")
    if not (torch.cuda.is_available() if cuda is None else cuda):
        return f"train.loss_impl={impl} runs on CUDA only (Triton kernels) and no GPU is visible: use train.loss_impl=chunked"
    return None


def check_loss_impl(impl: str) -> None:
    if (problem := loss_impl_error(impl)) is not None:
        raise ValueError(problem)


# ---------------------------------------------------------------- chunked: pure torch


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, labels_i), `chunk` rows of logits at a time.

    Written by hand because no library does it on the CPU: Liger-Kernel and Cut Cross-Entropy are Triton
    (CUDA) kernels, and CCE's torch_compile fallback materialises the whole logits matrix. As Liger does, the
    gradients are computed in the forward pass, chunk by chunk, while each chunk's logits exist anyway: the graph
    keeps only grad_hidden (n, hidden) and, for a trained output layer, grad_weight; backward scales them. That
    costs the same three matmuls as eager (no recomputation) and holds one chunk's logits at a time: two
    (rows, vocab) float32 buffers, logits and log-probabilities, 8 bytes per element.
    The numbers are eager's: logits in the weights' dtype, then the same float32 log_softmax kernel that eager's
    cross_entropy runs, row by row (a hand-written log-sum-exp differs from it by ~1e-5 on a 151k vocabulary),
    and the logits' gradient cast back to the weights' dtype as autograd does.
    """

    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if need_hidden else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_weight else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for start in range(0, hidden.shape[0], chunk):
            h, y = hidden[start : start + chunk], labels[start : start + chunk]
            z = torch.nn.functional.linear(h, weight).float()  # (rows, vocab) as the layer computes them
            logp = torch.log_softmax(z, dim=1)  # eager's cross_entropy kernel: its numbers, row by row
            del z
            total -= logp.gather(1, y[:, None]).sum()
            if need_hidden or need_weight:
                grad = logp.exp_()  # in place: softmax; the logits' gradient is softmax - one_hot(target)
                grad[torch.arange(len(y), device=grad.device), y] -= 1
                grad = grad.to(hidden.dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk] = grad @ weight
                if need_weight:
                    grad_weight += (grad.T @ h).float()
                del grad
            del logp  # freed before the next chunk's logits are allocated
        ctx.save_for_backward(grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx, grad_total: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        dh = grad_hidden * grad_total.to(grad_hidden.dtype) if grad_hidden is not None else None
        dw = (grad_weight * grad_total).to(ctx.weight_dtype) if grad_weight is not None else None
        return dh, dw, None, None


def chunked_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                                 chunk: int = 128) -> torch.Tensor:
    """Summed cross-entropy of hidden (n, h) through the output layer weight (vocab, h) against labels (n,)."""
    if chunk < 1:
        raise ValueError(f"train.loss_chunk={chunk}: expected a positive number of rows")
    return _ChunkedLinearCrossEntropy.apply(hidden, weight, labels, int(chunk))


# ---------------------------------------------------------------- liger / cce: CUDA kernels


def _liger(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy

    # accum_dtype float32: a trained 16-bit output layer's gradient is summed over chunks in fp32, as chunked does
    return liger_fused_linear_cross_entropy(hidden, weight, labels, reduction="sum", accum_dtype=torch.float32)


def _cce(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int) -> torch.Tensor:
    from cut_cross_entropy import linear_cross_entropy

    # filter_eps=None: CCE's default skips gradient terms of tiny softmax values; exact gradients keep loss_impl a
    # memory/speed choice that never changes what is trained
    return linear_cross_entropy(hidden, weight, labels, reduction="sum", filter_eps=None)


_FUSED: dict[str, Callable[..., torch.Tensor]] = {"chunked": chunked_linear_cross_entropy, "liger": _liger, "cce": _cce}


# ---------------------------------------------------------------- wiring into the model's forward


def _output_weight(head: torch.nn.Module) -> torch.Tensor:
    """The weight the output layer multiplies by (peft's modules_to_save wrapper: its active copy's)."""
    active = getattr(head, "modules_to_save", None)
    if active is not None and not getattr(head, "disable_adapters", False):
        names = head.active_adapters if hasattr(head, "active_adapters") else [head.active_adapter]
        if names and names[0] in active:
            head = active[names[0]]
    if getattr(head, "bias", None) is not None:
        raise ValueError("train.loss_impl: the output layer has a bias, which only train.loss_impl=eager handles")
    return head.weight


@dataclass
class OutputLayerLoss:
    """compute_loss_func for the HF Trainer: the loss of `impl` over the supervised positions."""

    impl: str = "chunked"
    chunk: int = 128  # chunked: rows of logits computed at once (train.loss_chunk)
    _hidden: list[torch.Tensor] = field(default_factory=list)
    _head: torch.nn.Module | None = None
    _handle: Any = None  # the output layer's pre-hook while attached
    _keep_input: Callable | None = None

    def __post_init__(self) -> None:
        check_loss_impl(self.impl)

    @contextlib.contextmanager
    def attached(self, model: torch.nn.Module) -> Iterator["OutputLayerLoss"]:
        """For the enclosed block the output layer keeps its input and computes no logits (eager: unchanged)."""
        if self.impl == "eager":
            yield self
            return
        head = model.get_output_embeddings()
        if head is None:
            raise ValueError(f"train.loss_impl={self.impl}: the model has no output layer (get_output_embeddings)")
        _output_weight(head)  # a layer the loss cannot take fails before training

        def keep_input(module, args):
            (hidden,) = args
            self._hidden.append(hidden)
            return (hidden[..., :0, :],)  # the layer computes (.., 0, vocab) logits: nothing

        self._keep_input = keep_input
        self._handle = head.register_forward_pre_hook(keep_input)
        self._head = head
        try:
            yield self
        finally:
            self._handle.remove()
            self._head = self._handle = None
            self._hidden.clear()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Inside `attached`, for the enclosed block: the output layer computes its logits (generation during
        training, vlmsweep.train.validation); outside `attached`, or eager, nothing changes."""
        if self._head is None or self._handle is None:
            yield
            return
        self._handle.remove()
        try:
            yield
        finally:
            self._hidden.clear()
            self._handle = self._head.register_forward_pre_hook(self._keep_input)

    def __call__(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: int | torch.Tensor | None = None):
        if self.impl == "eager":
            return masked_lm_loss(outputs, labels, num_items_in_batch)
        if self._head is None or len(self._hidden) != 1:
            raise RuntimeError(f"train.loss_impl={self.impl}: expected one output-layer input per forward, "
                               f"got {len(self._hidden)} (call the model inside OutputLayerLoss.attached)")
        hidden = self._hidden.pop()
        hidden = hidden.reshape(-1, hidden.shape[-1])
        total = _FUSED[self.impl](hidden, _output_weight(self._head), labels.to(hidden.device), self.chunk)
        denom = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return total / denom
