"""tmpfs files with PMD-sized folios in the page cache: PMD mappings
(``do_set_pmd``), PTE mappings of large folios (fault-around), truncation
and hole punching that split them."""

from __future__ import annotations

import errno

import pytest
from thpkit import HUGE, RW, THP_BASE, check_accounting, run1

from mmrace.mm.page_alloc import mem_state
from mmrace.mm.pgtable import peek_pmd, peek_pte, pmd_trans_huge, pte_pfn
from mmrace.mm.shmem import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE
from mmrace.user import MAP_FIXED, MAP_PRIVATE, MAP_SHARED, PAGE_SIZE, System

SHARED = MAP_SHARED | MAP_FIXED


def _tmpfs(huge: str = "always", size: int = 2 * HUGE) -> tuple[object, int]:
    s = System()
    s.create_file("/dev/shm/f", size, shmem=True, huge=huge)
    p = s.process()
    return p, p.open("/dev/shm/f")


def test_aligned_shared_mapping_gets_a_huge_pmd() -> None:
    def program() -> None:
        p, fd = _tmpfs()
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a + 3 * PAGE_SIZE, 5)
        pmd = peek_pmd(p.mm, a)
        assert pmd_trans_huge(pmd)
        f = p.folio_at(a)
        assert f.order == 9 and not f.anon and f._entire_mapcount == 1
        assert f.mapping.i_pages[7] is f and f._refcount == 512 + 1
        # a second process maps the same folio, its data visible
        q = p.system.process()
        fd2 = q.open("/dev/shm/f")
        b = q.mmap(THP_BASE, HUGE, RW, SHARED, fd2, 0)
        assert q.peek(b + 3 * PAGE_SIZE) == 5
        check_accounting([p, q])
        p.munmap(a, HUGE)
        q.munmap(b, HUGE)
        assert f._mapcount == 0 and f._refcount == 512  # the cache keeps it

    run1(program)


def test_unaligned_mapping_maps_the_large_folio_by_ptes() -> None:
    def program() -> None:
        p, fd = _tmpfs()
        # The page cache gets a THP (through an aligned mapping) ...
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a + 17 * PAGE_SIZE, 17)
        f = p.folio_at(a)
        # ... which a mapping at an offset that is not PMD-aligned maps by PTEs,
        # fault-around filling the neighbours (filemap_map_pages)
        b = p.mmap(THP_BASE + 8 * HUGE, HUGE, RW, SHARED, fd, PAGE_SIZE)
        assert p.peek(b + 16 * PAGE_SIZE) == 17
        assert not pmd_trans_huge(peek_pmd(p.mm, b))
        assert pte_pfn(peek_pte(p.mm, b + 16 * PAGE_SIZE)) == f.pfn + 17
        mapped = [i for i in range(512) if f.page_mapcount[i]]
        assert len(mapped) >= 2 and 17 in mapped  # fault-around: more than the one page
        check_accounting([p])

    run1(program)


def test_huge_never_and_within_size() -> None:
    def program() -> None:
        p, fd = _tmpfs("never")
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        assert not pmd_trans_huge(peek_pmd(p.mm, a)) and p.folio_at(a).order == 0
        s = p.system
        s.create_file("/dev/shm/g", HUGE + PAGE_SIZE, shmem=True, huge="within_size")
        fd2 = p.open("/dev/shm/g")
        b = p.mmap(THP_BASE + 4 * HUGE, 2 * HUGE, RW, SHARED, fd2, 0)
        p.poke(b, 1)  # the first 2 MiB are within the size: huge
        p.poke(b + HUGE, 1)  # the second block is not
        assert pmd_trans_huge(peek_pmd(p.mm, b))
        assert p.folio_at(b + HUGE).order == 0

    run1(program)


def test_ftruncate_splits_a_large_folio_and_sigbus_beyond() -> None:
    def program() -> None:
        p, fd = _tmpfs()
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a + 10 * PAGE_SIZE, 10)
        p.poke(a + 300 * PAGE_SIZE, 300)
        f = p.folio_at(a)
        p.ftruncate(fd, 100 * PAGE_SIZE + 64)
        assert f.order == 0  # split
        mapping = f.mapping
        assert max(mapping.i_pages) == 100 and all(i in mapping.i_pages for i in range(101))
        assert p.peek(a + 10 * PAGE_SIZE) == 10
        with pytest.raises(OSError):
            p.peek(a + 300 * PAGE_SIZE)  # SIGBUS beyond EOF
        check_accounting([p])
        p.ftruncate(fd, 0)
        assert not mapping.i_pages
        p.exit()
        assert not mem_state().live

    run1(program)


def test_punch_hole_zeroes_and_splits() -> None:
    def program() -> None:
        p, fd = _tmpfs()
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        for i in (0, 5, 6, 7, 400):
            p.poke(a + i * PAGE_SIZE, i + 1)
        f = p.folio_at(a)
        p.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 5 * PAGE_SIZE,
                    2 * PAGE_SIZE)
        assert f.order == 0
        mapping = f.mapping
        assert 5 not in mapping.i_pages and 6 not in mapping.i_pages
        assert p.peek(a) == 1 and p.peek(a + 7 * PAGE_SIZE) == 8
        assert p.peek(a + 400 * PAGE_SIZE) == 401
        assert p.peek(a + 5 * PAGE_SIZE) == 0  # a hole reads as zeroes
        check_accounting([p])
        with pytest.raises(OSError) as e:
            p.fallocate(fd, 0, 0, PAGE_SIZE)
        assert e.value.errno == errno.EOPNOTSUPP

    run1(program)


def test_private_mapping_of_a_huge_folio_cows_per_page() -> None:
    def program() -> None:
        p, fd = _tmpfs()
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)
        b = p.mmap(THP_BASE + 4 * HUGE, HUGE, RW, MAP_PRIVATE | MAP_FIXED, fd, 0)
        assert p.peek(b) == 1 and pmd_trans_huge(peek_pmd(p.mm, b))
        p.poke(b, 2)  # the file PMD is split, the page copied privately
        assert p.peek(b) == 2 and p.peek(a) == 1
        check_accounting([p])

    run1(program)


def test_recipe_pte_mapped_large_folio_in_an_aligned_vma() -> None:
    """The docs' recipe for what collapse_pte_mapped_thp works on: a
    2 MiB-aligned VMA whose large folio is mapped by PTEs."""
    from mmrace.user import PROT_READ, for_each_vma

    def program() -> None:
        p, fd = _tmpfs()
        a = p.mmap(THP_BASE, HUGE, RW, SHARED, fd, 0)
        p.poke(a, 1)  # the large folio, mapped by a PMD
        p.mprotect(a + HUGE // 2, HUGE // 2, PROT_READ)  # split VMA: PMD cleared
        assert p.peek(a) == 1  # fault-around maps the folio by PTEs
        p.mprotect(a + HUGE // 2, HUGE // 2, RW)
        assert len(list(for_each_vma(p.mm))) == 1
        assert not pmd_trans_huge(peek_pmd(p.mm, a))
        f = p.folio_at(a)
        assert f.order == 9 and f._entire_mapcount == 0 and f._mapcount >= 1
        check_accounting([p])

    run1(program)
