"""Messages a user can do nothing about, filtered by the command-line entry points only (library code and tests
still see them)."""

from __future__ import annotations

import logging
import warnings


def quiet_third_party() -> None:
    # transformers 5 deprecates `is_gradient_checkpointing`, which peft (PeftModel.__init__, so every adapter load:
    # train, predict, export) and the Trainer still call: their call to change, not ours.
    warnings.filterwarnings("ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning)
    # peft imports bitsandbytes whenever it is installed (peft/tuners/lora/bnb.py), so bf16 runs load it too; on
    # CPUs with AVX512-BF16 its import tries to fetch a kernel from the Hugging Face hub and logs a warning when it
    # cannot (no network, or the `kernels` package absent). 4-bit runs work without it.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    # ... and `kernels` itself (0.12) warns that offline it skips the publisher trust check of that same download
    logging.getLogger("kernels").setLevel(logging.ERROR)
