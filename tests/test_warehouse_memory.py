"""warehouse.memory: this process's RSS and its children's private memory from /proc (Linux), as the pipeline's
StageMeter and the benchmarks read them."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from cohortflow.warehouse import memory

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux /proc")


def test_rss_grows_with_a_touched_block():
    before = memory.rss_mib()
    block = np.ones(200 * 2**20 // 8)  # 200 MiB, written
    assert memory.rss_mib() - before > 150
    assert memory.private_mib("self") > 150
    del block


def test_a_forked_child_counts_only_what_it_writes_as_private():
    shared = np.ones(200 * 2**20 // 8)  # in the parent before the fork: shared with the child
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: touch (read) the shared block, write a 100 MiB block of its own, then wait
        os.close(read)
        float(shared.sum())
        own = np.ones(100 * 2**20 // 8)
        os.write(write, b"x")
        time.sleep(5)
        os._exit(0 if own[0] == 1 else 1)
    os.close(write)
    try:
        os.read(read, 1)
        assert str(pid) in memory.children_pids()
        rss, private = memory.rss_mib(pid), memory.private_mib(pid)
        assert rss > 250  # its RSS counts the parent's 200 MiB it reads
        assert 80 < private < 200  # its private memory only its own block (and a few pages of its own)
        # the sums over all children (others may be alive in a long test session, e.g. a Prefect server) hold it
        all_rss, all_private = memory.children_mib()
        assert all_rss >= rss - 1 and all_private >= private - 20
        assert memory.children_private_mib() >= private - 20
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        os.close(read)


def test_cpu_seconds_count_an_ended_child():
    """A forked child's CPU time counts once it has been waited for (the benchmarks' readers and workers)."""
    before = memory.cpu_seconds()
    pid = os.fork()
    if pid == 0:  # child: about 0.3 s of CPU
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    assert memory.cpu_seconds() - before >= 0.25
