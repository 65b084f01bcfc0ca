"""The typed VMA API, checked statically: ``mypy --strict`` on small
driver snippets reports exactly the calls a handle's lock does not permit
(each marked ``# error: CODE`` below) and nothing for correct uses. One
mypy run covers every snippet."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PRELUDE = """\
from mmrace.kapi import (
    Mm, MmapReadGuard, MmapWriteGuard, MmWithUser, VmaMixedMap, VmaMut, VmaNew,
    VmaReadGuard, VmaRef,
)
from mmrace.mm.mm_types import VM_DONTCOPY, VM_IO, File
from mmrace.mm.page_alloc import Folio
"""

# Each snippet: the lines after the prelude. A line ending in
# "# error: CODE" must produce exactly one mypy error with that code.
SNIPPETS: dict[str, str] = {
    "wrong_state": """\
def vmaref_set_flags(vma: VmaRef) -> None:
    vma.set_flags(VM_IO)  # error: attr-defined

def vmaref_insert(vma: VmaRef, page: Folio) -> None:
    vma.vm_insert_page(vma.start(), page)  # error: attr-defined

def read_guard_set_mixedmap(vma: VmaReadGuard) -> None:
    vma.set_mixedmap()  # error: attr-defined

def mixedmap_set_flags(vma: VmaMixedMap) -> None:
    vma.set_flags(VM_DONTCOPY)  # error: attr-defined

def vmamut_insert(vma: VmaMut, page: Folio) -> None:
    vma.vm_insert_page(vma.start(), page)  # error: attr-defined

def vmamut_set_mixedmap(vma: VmaMut) -> None:
    vma.set_mixedmap()  # error: attr-defined

def mm_without_user_locks(mm: Mm) -> None:
    mm.mmap_read_lock()  # error: attr-defined

def mm_without_user_vma_lock(mm: Mm) -> None:
    mm.lock_vma_under_rcu(0)  # error: attr-defined

def read_guard_mut(guard: MmapReadGuard) -> None:
    guard.vma_lookup_mut(0)  # error: attr-defined
""",
    "unchecked_option": """\
def lookup_may_fail(guard: MmapReadGuard) -> int:
    return guard.vma_lookup(0).start()  # error: union-attr

def mmget_may_fail(mm: Mm) -> None:
    mm.mmget_not_zero().mmap_read_lock()  # error: union-attr

def mixedmap_may_fail(vma: VmaRef, page: Folio) -> None:
    vma.as_mixedmap_vma().vm_insert_page(0, page)  # error: union-attr
""",
    "correct_uses": """\
def binder_mmap(file: File, vma: VmaNew) -> None:
    vma.try_clear_maywrite()
    vma.set_dontcopy()
    vma.set_flags(VM_IO)
    vma.set_mixedmap()

def install(mm: Mm, addr: int, page: Folio) -> bool:
    user = mm.mmget_not_zero()
    if user is None:
        return False
    guard = user.lock_vma_under_rcu(addr)
    if guard is not None:
        mixed = guard.as_mixedmap_vma()
        if mixed is not None:
            mixed.vm_insert_page(addr, page)
        guard.drop()
    else:
        with user.mmap_read_lock() as read:
            vma = read.vma_lookup(addr)
            if vma is not None:
                vma.zap_page_range_single(addr, 4096)
    user.into_mmput_async().drop()
    return True

def ioctl(mm: MmWithUser, addr: int) -> None:
    with mm.mmap_write_lock() as write:
        vma = write.vma_lookup_mut(addr)
        if vma is not None:
            vma.set_flags(VM_DONTCOPY)
    guard: MmapWriteGuard = mm.mmap_write_lock()
    guard.drop()
""",
}

_ERROR = re.compile(r"^(?P<file>[\w.]+):(?P<line>\d+): error: (?P<msg>.*?)\s+\[(?P<code>[\w-]+)\]$")


def _mypy() -> str:
    exe = Path(sys.executable).with_name("mypy")
    if exe.exists():
        return str(exe)
    found = shutil.which("mypy")
    if found is None:
        pytest.skip("mypy is not installed")
    return found


def _expected() -> set[tuple[str, int, str]]:
    base = PRELUDE.count("\n")
    out = set()
    for name, body in SNIPPETS.items():
        for i, line in enumerate(body.splitlines(), start=base + 1):
            m = re.search(r"# error: ([\w-]+)$", line)
            if m:
                out.add((f"{name}.py", i, m.group(1)))
    return out


def test_mypy_rejects_exactly_the_calls_a_handle_lacks(tmp_path: Path) -> None:
    for name, body in SNIPPETS.items():
        (tmp_path / f"{name}.py").write_text(PRELUDE + body)
    proc = subprocess.run(
        [_mypy(), "--strict", "--follow-imports=silent", "--no-error-summary",
         "--show-error-codes", "--no-pretty", "--cache-dir",
         str(ROOT / ".mypy_cache" / "kapi-snippets"),
         *sorted(f"{n}.py" for n in SNIPPETS)],
        cwd=tmp_path, capture_output=True, text=True,
        env={"MYPYPATH": str(ROOT / "src"), "PATH": ""},
    )
    got = set()
    for line in proc.stdout.splitlines():
        m = _ERROR.match(line.strip())
        assert m is not None, f"unexpected mypy output: {line}\n{proc.stdout}{proc.stderr}"
        got.add((m["file"], int(m["line"]), m["code"]))
    assert got == _expected(), proc.stdout + proc.stderr
    assert proc.returncode == 1


def test_the_checker_sees_a_correct_file_as_correct(tmp_path: Path) -> None:
    # The expectation must be able to fail: the correct snippet alone is
    # clean, and the marked lines really are the ones reported.
    marked = _expected()
    assert {f for f, _, _ in marked} == {"wrong_state.py", "unchecked_option.py"}
    assert len(marked) == 12
