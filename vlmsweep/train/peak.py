"""Peak memory of a block of work, measured: CUDA's peak allocation or, on the CPU, the peak RSS growth."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class MemoryMeasurement:
    """peak_bytes: on CUDA torch.cuda.max_memory_allocated() (absolute: weights loaded before count);
    on the CPU the peak resident-set growth over the RSS at entry (so enter before building the model).
    It reads the peak so far while the block runs too (every training log line shows it), on either device."""

    device: str = "cpu"
    baseline_bytes: int = 0
    samples: int = 0
    _peak: int = 0
    _live: Callable[[], int] | None = None  # CUDA, inside the block: the allocator's peak since entry

    @property
    def peak_bytes(self) -> int:
        return self._live() if self._live is not None else self._peak


@contextlib.contextmanager
def measure(device: str | None = None, interval_s: float = 0.01) -> Iterator[MemoryMeasurement]:
    """Measure peak memory of the enclosed block; read `.peak_bytes` in it (so far) or after it.

    CUDA: resets the peak statistics at entry (Hydra's basic launcher runs multirun jobs in one process
    and would otherwise carry the previous job's peak, Hydra #2631). CPU: VmHWM in /proc is the
    process-lifetime peak and cannot be reset per block, so a thread samples RSS with psutil every
    `interval_s` (torch releases the GIL in its kernels, so the sampler keeps running).
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    result = MemoryMeasurement(device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.baseline_bytes = torch.cuda.memory_allocated(device)
        result._live = lambda: torch.cuda.max_memory_allocated(device)
        try:
            yield result
        finally:
            torch.cuda.synchronize(device)
            result._live = None
            result._peak = torch.cuda.max_memory_allocated(device)
            result.samples = 1
        return

    import psutil

    _malloc_trim()
    proc = psutil.Process()
    result.baseline_bytes = proc.memory_info().rss
    peak = [result.baseline_bytes]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            result._peak = peak[0] - result.baseline_bytes  # readable while the block runs
            result.samples += 1
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, name="vlmsweep-rss-sampler", daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join()
        peak[0] = max(peak[0], proc.memory_info().rss)
        result._peak = peak[0] - result.baseline_bytes


def _malloc_trim() -> None:
    """Hand glibc's freed-but-kept heap back to the OS, so earlier work in this process cannot hide growth."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)  # glibc only; elsewhere RSS growth may read low
