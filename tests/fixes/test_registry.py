from __future__ import annotations

from collections.abc import Iterator

import pytest

from mmrace import fixes
from mmrace.fixes import Era, Fix, FixError, KernelConfig, Policy, parse_release


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(fixes, "FIXES", {})
    monkeypatch.setattr(fixes, "POLICIES", {})
    fixes.register_fix(Fix("old-fix", "mm: old fix", "x", release="4.19"))
    fixes.register_fix(Fix("new-fix", "mm: new fix", "y", release="6.1"))
    fixes.register_fix(Fix("idea", "[RFC] mm: an idea", "z", merged=False))
    fixes.register_policy(
        Policy(
            "reuse",
            "how COW decides",
            (
                Era("mapcount", "0", "initial", "a"),
                Era("page_count", "5.9", "mm: do_wp_page() simplification", "b"),
                Era("exclusive", "5.19", "later", "c"),
            ),
        )
    )
    yield


def test_current_kernel_has_merged_fixes_only(registry: None) -> None:
    k = KernelConfig()
    assert k.has("old-fix") and k.has("new-fix") and not k.has("idea")
    assert k.policy("reuse") == "exclusive"


def test_release_turns_later_fixes_off_and_picks_the_era(registry: None) -> None:
    k = KernelConfig(release="5.10")
    assert k.has("old-fix") and not k.has("new-fix")
    assert k.policy("reuse") == "page_count"
    assert KernelConfig(release="5.8").policy("reuse") == "mapcount"
    assert KernelConfig(release="5.19").policy("reuse") == "exclusive"


def test_with_and_without_adjust_on_top(registry: None) -> None:
    k = KernelConfig(without=["new-fix"], with_=["idea"])
    assert not k.has("new-fix") and k.has("idea")
    k = KernelConfig(release="4.4", with_=["old-fix"])
    assert k.has("old-fix")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"without": ["nope"]},
        {"with_": ["nope"]},
        {"release": "five"},
        {"release": "5.x"},
        {"without": ["idea"], "with_": ["idea"]},
        {"policies": {"reuse": "bogus"}},
        {"policies": {"nope": "x"}},
    ],
)
def test_bad_requests_are_errors(registry: None, kwargs: dict[str, object]) -> None:
    with pytest.raises(FixError):
        KernelConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_slug_asked_by_model_code_is_an_error(registry: None) -> None:
    with pytest.raises(FixError):
        KernelConfig().has("typo")


def test_registration_rules(registry: None) -> None:
    with pytest.raises(FixError):
        fixes.register_fix(Fix("old-fix", "dup", "x", release="5.0"))
    with pytest.raises(FixError):
        fixes.register_fix(Fix("merged-no-release", "t", "x"))


def test_parse_release() -> None:
    assert parse_release("5.10") == (5, 10)
    assert parse_release("v6.1.3") == (6, 1, 3)
    assert parse_release("5.10") > parse_release("5.9")
