"""StageMeter: per-stage wall seconds, this process's peak RSS, and the process tree's peak (own RSS plus the
private memory of forked children, which the model flow's workers and the Data Docs builder are)."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from cohortflow.flows.pipeline import StageMeter

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


def _fork_holding(mib: int, seconds: float) -> int:
    """Fork a child that writes `mib` MiB (so its pages are its own), holds them `seconds`, and exits at once
    (os._exit: none of the parent's exit handlers or test machinery run in it). Returns its exit status."""
    pid = os.fork()
    if pid == 0:  # the child
        try:
            block = b"\x01" * (mib * 2**20)
            time.sleep(seconds)
            del block
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


def test_stage_peaks_count_own_memory_and_childrens_private_memory():
    meter = StageMeter(interval=0.02)
    try:
        with meter.stage("here"):
            block = np.ones(300 * 2**20 // 8)
            time.sleep(0.3)
            del block
        with meter.stage("child"):
            assert _fork_holding(300, 1.5) == 0
    finally:
        meter.close()
    here, kid = meter.stages["here"], meter.stages["child"]
    assert here["peak_rss_mib"] - here["rss_before_mib"] > 250  # the 300 MiB block of this process
    assert here["peak_tree_mib"] >= here["peak_rss_mib"]
    assert kid["peak_rss_mib"] - kid["rss_before_mib"] < 100  # the child's block is not in this process
    assert kid["peak_tree_mib"] - kid["peak_rss_mib"] > 250  # but in the tree's
    assert 1.4 < kid["seconds"] < 30
