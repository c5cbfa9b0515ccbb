"""Peak memory of a block of work, measured: CUDA's peak allocation or, on the CPU, the peak growth of the
process's anonymous resident memory (its heap: what tensors occupy)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class MemoryMeasurement:
    """peak_bytes: on CUDA torch.cuda.max_memory_allocated() (absolute: weights loaded before count);
    on the CPU the peak growth of anonymous resident memory over its size at entry (so enter before building the
    model). Anonymous, not the whole RSS: the first backward pass pages in 30-50 MiB of torch's library code
    (file-backed, shared with every process that maps it, never on an accelerator), which made a 166 MiB step
    measure 1.33-1.45x its estimate on the 2-core Intel Xeon; its heap alone measured 1.0-1.26x.
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
def measure(device: str | None = None, interval_s: float = 0.01, exact: bool = False) -> Iterator[MemoryMeasurement]:
    """Measure peak memory of the enclosed block; read `.peak_bytes` in it (so far) or after it.

    CUDA: resets the peak statistics at entry (Hydra's basic launcher runs multirun jobs in one process
    and would otherwise carry the previous job's peak, Hydra #2631). CPU: VmHWM in /proc is the
    process-lifetime peak of the whole RSS and cannot be reset per block, so a thread samples with psutil every
    `interval_s` (torch releases the GIL in its kernels, so the sampler keeps running). A sample can miss a
    peak that lives less than `interval_s` (a freed logits tensor); `exact=True` (Linux) also resets the kernel's
    peak-RSS counter at entry (/proc/self/clear_refs) and takes at exit that peak less the file-backed pages then
    resident, if larger: for a process that measures nothing else, as the counter is also getrusage's ru_maxrss.
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
    result.baseline_bytes = _anonymous(proc)
    exact = exact and _reset_peak_rss()
    peak = [result.baseline_bytes]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _anonymous(proc))
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
        peak[0] = max(peak[0], _anonymous(proc))
        if exact:
            peak[0] = max(peak[0], _peak_rss_less_files(proc))
        result._peak = peak[0] - result.baseline_bytes


def _reset_peak_rss() -> bool:
    """VmHWM := the current RSS (Linux >= 4.0); False where that cannot be done."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_less_files(proc) -> int:
    """The peak RSS since the reset less the file-backed and shared pages resident now: the anonymous peak, a lower
    bound of it where library pages were paged in after the peak (they only grow in a measured block)."""
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    return hwm - getattr(proc.memory_info(), "shared", 0)


def _anonymous(proc) -> int:
    """Resident bytes not backed by a file (Linux: RssAnon = rss - shared, psutil's `shared` being RssFile + RssShmem);
    where psutil has no `shared` field (macOS, Windows), the whole RSS."""
    info = proc.memory_info()
    return info.rss - getattr(info, "shared", 0)


def _malloc_trim() -> None:
    """Hand glibc's freed-but-kept heap back to the OS, so earlier work in this process cannot hide growth."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)  # glibc only; elsewhere the growth may read low
