"""Memory (and CPU) of this process and of its process tree, from Linux /proc (0 elsewhere); no Prefect.

* `rss_mib(pid)`: resident memory of a process.
* `private_mib(pid)`: its private memory (pages not shared with its parent after a fork: what it adds).
* `children_mib()`: (summed RSS, summed private memory) of this process's direct children.
* `cpu_seconds()`: user + system CPU seconds of this process and of its children that have ended.
* `can_fork_workers()`: whether this process may fork worker processes (what the forking stages ask first).
* `StageMeter`: wall seconds, peak RSS and peak process-tree memory (own RSS + children's private memory)
  of named stages, sampled by a daemon thread. Used by the pipeline (`flows/pipeline.py`) and the benchmarks.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path

try:
    _PAGE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
    _PAGE = 4096


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of process `pid` (default this one) in MiB; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def private_mib(pid: int | str) -> float:
    """Memory private to process `pid` (Private_Clean + Private_Dirty of smaps_rollup: not shared with its
    parent after a fork) in MiB; 0 when it cannot be read."""
    total = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith(("Private_Clean:", "Private_Dirty:")):
                    total += int(line.split()[1])
    except OSError:
        return 0.0
    return total / 1024


def children_pids() -> list[str]:
    """Process ids of this process's direct children (of every thread), from /proc; [] elsewhere."""
    try:
        tasks = list(Path("/proc/self/task").iterdir())
    except OSError:
        return []
    pids: list[str] = []
    for thread in tasks:
        try:
            pids += (thread / "children").read_text().split()
        except OSError:
            continue
    return pids


def children_mib() -> tuple[float, float]:
    """(summed RSS, summed private memory) of this process's direct children in MiB, e.g. forked model-flow
    workers: RSS counts the parent's pages they share copy-on-write, private memory does not."""
    kids = children_pids()
    return sum(rss_mib(k) for k in kids), sum(private_mib(k) for k in kids)


def children_private_mib() -> float:
    """Private memory of this process's direct children in MiB (what they add to the machine)."""
    return sum(private_mib(k) for k in children_pids())


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and of its ended (joined) children, e.g. forked model-flow
    workers or ingestion's reader processes: on a shared machine a steadier measure of work than wall time."""
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def can_fork_workers() -> bool:
    """True when this process may start worker processes: fork exists and we are not a daemonic process
    (a Dask or multiprocessing worker, which may not have children): there, work runs in this process."""
    import multiprocessing as mp

    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


class StageMeter:
    """Wall seconds and peak resident memory of each stage.

    A daemon thread samples the process's RSS every `interval` seconds, and every `children_every`-th time
    also its children's private memory (the process tree's footprint: forked workers share the parent's
    pages copy-on-write, so their RSS would count those twice); `stage(name)` is a context manager that
    records `{seconds, peak_rss_mib, peak_tree_mib, peak_children_mib, rss_before_mib}` under `name` in
    `self.stages`.
    """

    def __init__(self, interval: float = 0.05, children_every: int = 10) -> None:
        self.stages: dict[str, dict[str, float]] = {}
        self._peak = rss_mib()
        self._tree_peak = self._peak
        self._children = 0.0
        self._children_peak = 0.0
        self._interval = interval
        self._every = max(1, children_every)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True, name="stage-meter")
        self._thread.start()

    def _sample(self) -> None:
        n = 0
        while not self._stop.wait(self._interval):
            own = rss_mib()
            if n % self._every == 0:  # reading the children's page tables costs more than our own counter
                self._children = children_private_mib()
                self._children_peak = max(self._children_peak, self._children)
            n += 1
            self._peak = max(self._peak, own)
            self._tree_peak = max(self._tree_peak, own + self._children)

    @contextmanager
    def stage(self, name: str):
        """Measure the enclosed block as stage `name`."""
        before = rss_mib()
        # the children now, not the last sample (it may be a child of the stage before, e.g. a forked reader)
        self._children = children_private_mib()
        self._peak = before
        self._tree_peak = before + self._children
        self._children_peak = self._children
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self._peak = max(self._peak, rss_mib())
            self._tree_peak = max(self._tree_peak, self._peak)
            self.stages[name] = {"seconds": round(time.perf_counter() - t0, 3),
                                 "peak_rss_mib": round(self._peak, 1), "peak_tree_mib": round(self._tree_peak, 1),
                                 "peak_children_mib": round(self._children_peak, 1),
                                 "rss_before_mib": round(before, 1)}

    def close(self) -> None:
        self._stop.set()
