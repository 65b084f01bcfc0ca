"""Seed 003's catalog entries beyond their catalog settings: both Binder
designs stay clean with one more preemption (slow), and the reported
use-after-free is the install path's, naming the receiver's mm."""

from __future__ import annotations

import pytest

from mmrace.scenarios import Explore, get
from mmrace.scenarios.run import run_variant


def test_the_base_use_after_free_is_the_install_path_on_the_receivers_mm() -> None:
    sc = get("binder-page-install-vs-exit")
    run = run_variant(sc, sc.variant("base"))
    v = run.result.violation
    assert v is not None and v.title == "use-after-free of mm1's address space"
    assert "vm_insert_page by sender" in v.message and "mmput by receiver" in v.message


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["current", "base+binder-lazy-fault"])
def test_binder_designs_are_clean_within_three_preemptions(variant: str) -> None:
    sc = get("binder-page-install-vs-exit")
    run = run_variant(sc, sc.variant(variant),
                      settings=Explore(strategy="bounded", preemption_bound=3))
    assert run.outcome == "clean", run.result.violation and run.result.violation.message
