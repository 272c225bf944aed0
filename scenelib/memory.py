"""Memory: what this machine has available, the RAM budget of the feature cache, and the peak resident
memory of a stage (the driver and every process it started, sampled while the stage runs).

The feature cache holds the frozen prefix's output for every (image, view) pair the run reads, in fp16.
For a deep backbone cut late (ResNet-50 after layer3: 1024 x 14 x 14 per view at 224 px) that is gigabytes;
above ``RAM_SHARE`` of the available memory it goes to a memory-mapped file instead (``features.py``), whose
pages the kernel can drop and re-read rather than running out of memory.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager

RAM_SHARE = 0.5  # of the memory available when the cache is allocated
RAM_BUDGET_ENV = "SCENELIB_CACHE_RAM_MB"  # a fixed budget in MB instead (0: always spill)


def available_bytes() -> int | None:
    """Memory available to new allocations without swapping (psutil, else /proc/meminfo), or None."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def total_bytes() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cache_ram_budget() -> int:
    """Bytes the feature cache may hold in RAM: ``$SCENELIB_CACHE_RAM_MB`` if set, else ``RAM_SHARE`` of the
    available memory (unknown: no limit)."""
    fixed = os.environ.get(RAM_BUDGET_ENV)
    if fixed not in (None, ""):
        return int(float(fixed) * 2**20)
    available = available_bytes()
    return int(available * RAM_SHARE) if available is not None else 2**62


def _tree_rss(pid: int) -> int:
    """Resident bytes of process ``pid`` and all its descendants (0 when psutil is missing)."""
    try:
        import psutil
    except ImportError:
        return 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            continue
    return total


class PeakRSS:
    """Samples the resident memory of this process and its descendants every ``interval`` seconds in a
    background thread; ``peak_mb`` is the highest sum seen (None where it cannot be measured)."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while True:
            self.peak = max(self.peak, _tree_rss(os.getpid()))
            if self._stop.wait(self.interval):
                return

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _tree_rss(os.getpid()))

    @property
    def peak_mb(self) -> float | None:
        return round(self.peak / 2**20, 1) if self.peak else None


@contextmanager
def peak_rss(interval: float = 0.5):
    """``with peak_rss() as sampler: ...`` then ``sampler.peak_mb``."""
    sampler = PeakRSS(interval).start()
    try:
        yield sampler
    finally:
        sampler.stop()
