"""The checkers that enforce ``mm/rules.py`` on every access.

The rule tables are compiled once per kernel (``KernelConfig``): each
alternative of each rule becomes a tuple of token tests chosen for that
kernel (before 6.4 there is no per-VMA lock, so ``VMA W`` is the mmap write
lock and ``VMA R`` cannot be held), with the alternatives of other eras left
out. A checked read of a VMA field then costs a cache probe: its verdict is
kept in the reading thread's lock record (``mm.internal.Held``) against the
record's version, which every lock acquisition and release bumps, and
against the VMA's rmap membership (the only other thing a read verdict
depends on).

Every rule, alternative, lock-state row and lock-order level records that a
checker consulted it (:func:`consulted`); the document-completeness test
runs a representative set of programs and requires that everything
``mmrace doc`` renders was consulted.

Violations: ``locking-rule`` (a field, entry, table free or lock state
against the tables) and ``lock-order`` (the documented hierarchy, checked by
lockdep through :class:`MmLockOrder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mmrace.engine import (
    READ,
    WRITE,
    SharedObject,
    ViolationError,
    current_execution,
    execution_local,
)
from mmrace.fixes import KernelConfig
from mmrace.mm.internal import Held, all_held, held, kernel_config
from mmrace.mm.locks import kobject_access
from mmrace.mm.rules import (
    CONDITIONS,
    EXCEPTIONS,
    FORBIDDEN_NESTING,
    LOCK_ORDER,
    LOCK_ORDER_EDGES,
    LOCK_STATES,
    MMAP_LOCK_EXCLUSION,
    RULES,
    Alt,
    Rule,
    alt_text,
    lock_order_closure,
    rule_id,
)
from mmrace.sync import irqs_disabled, rcu_read_lock_held
from mmrace.sync.lockdep import lock_order_point, set_documented_order

# --- consultation record ----------------------------------------------------------------------

_CONSULTED: set[str] = set()


def consulted() -> frozenset[str]:
    """Everything a checker has consulted in this process: rule alternatives
    (``vm_start.write.1``), lock-state rows (``lock-state.3``), mmap
    exclusivity rows (``mmap-exclusion.D``), lock-order levels
    (``lock-order.mm->mmap_lock``) and pairs (``lock-order.A>B``)."""
    return frozenset(_CONSULTED)


def reset_consulted() -> None:
    _CONSULTED.clear()
    _ORDER.seen.clear()
    for rs in _RULESETS.values():
        for cr in rs.rules.values():
            cr.read_verdicts.clear()


def locking_rules_off() -> None:
    """Switch the locking-rule checks off for the rest of this execution (call
    it in a program's set-up, to see what breaking a rule leads to). Reads
    then become visible operations again, as they are without a checker."""
    current_execution().locals["mm.rules_off"] = True
    for h in all_held().values():
        h.rules_off = True
        h.version += 1


# --- helpers shared by the token tests --------------------------------------------------------


def _mm_of(vma: Any) -> Any:
    return vma._f_vm_mm


def _per_vma_locks(cfg: KernelConfig) -> bool:
    return bool(cfg.has("per-vma-locks"))


def _vma_write_locked(vma: Any, h: Held) -> bool:
    mm = vma._f_vm_mm
    return h.mmap.get(mm.serial) == "W" and vma.vm_lock.vm_lock_seq == mm.mm_lock_seq.sequence


def rmap_locks(vma: Any) -> list[Any]:
    """The rwsems of the rmap trees *vma* is in (file i_mmap, anon_vma)."""
    out = []
    if vma._f_shared_rb and vma._f_vm_file is not None:
        out.append(vma._f_vm_file.f_mapping.i_mmap_rwsem)
    av = vma._f_anon_vma
    if av is not None:
        out.append(av.rwsem)
    return out


def _rmap_r(vma: Any, h: Held) -> bool:
    return any(s.serial in h.rwsem for s in rmap_locks(vma))


def _rmap_w(vma: Any, h: Held) -> bool:
    return all(h.rwsem.get(s.serial) == "W" for s in rmap_locks(vma))


def rmap_reachable(vma: Any) -> str:
    """Through which rmap tree *vma* can still be found ('' if none)."""
    if vma._f_shared_rb:
        return "the file rmap (i_mmap)"
    if vma._f_anon_vma_chain:
        return "an anon_vma"
    return ""


def _detached(vma: Any) -> bool:
    return bool(vma.vm_lock.vm_refcnt == 0)


# --- VMA-field token tests: (vma, held, prior anon_vma) -> bool --------------------------------

VmaTest = Callable[[Any, Held, Any], bool]


def _vma_tests(cfg: KernelConfig) -> dict[str, VmaTest]:
    per_vma = _per_vma_locks(cfg)

    def mmap_r(vma: Any, h: Held, prior: Any) -> bool:
        return _mm_of(vma).serial in h.mmap

    def mmap_w(vma: Any, h: Held, prior: Any) -> bool:
        return h.mmap.get(_mm_of(vma).serial) == "W"

    def vma_r(vma: Any, h: Held, prior: Any) -> bool:
        return vma.serial in h.vma_read

    def vma_w(vma: Any, h: Held, prior: Any) -> bool:
        return _vma_write_locked(vma, h)

    def i_mmap_w(vma: Any, h: Held, prior: Any) -> bool:
        f = vma._f_vm_file
        return f is None or h.rwsem.get(f.f_mapping.i_mmap_rwsem.serial) == "W"

    def anon_vma_w(vma: Any, h: Held, prior: Any) -> bool:
        av = prior if prior is not None else vma._f_anon_vma
        return av is None or h.rwsem.get(av.rwsem.serial) == "W"

    def page_table_lock(vma: Any, h: Held, prior: Any) -> bool:
        return _mm_of(vma).page_table_lock.serial in h.spin

    def numab(vma: Any, h: Held, prior: Any) -> bool:
        return _mm_of(vma).serial in h.numab

    def never(vma: Any, h: Held, prior: Any) -> bool:
        return False

    return {
        "mmap R": mmap_r,
        "mmap W": mmap_w,
        "VMA R": vma_r if per_vma else never,
        # Before the per-VMA lock, writers needed the mmap write lock only.
        "VMA W": vma_w if per_vma else mmap_w,
        "rmap R": lambda vma, h, prior: _rmap_r(vma, h),
        "rmap W": lambda vma, h, prior: _rmap_w(vma, h),
        "i_mmap W": i_mmap_w,
        "anon_vma W": anon_vma_w,
        "page_table_lock": page_table_lock,
        "RCU": lambda vma, h, prior: rcu_read_lock_held(),
        "detached": lambda vma, h, prior: _detached(vma),
        "numab": numab,
        "driver": lambda vma, h, prior: True,
        # "atomic" holds only through an atomic accessor (check_vma_atomic).
        "atomic": never,
        "never": never,
        "unreachable": never,
        "rcu free": never,
        "pte ptl": never,
        "pmd ptl": never,
        "IRQs off": never,
    }


# --- compiled rules ----------------------------------------------------------------------------


class CompiledAlt:
    """One alternative of a rule, for one kernel."""

    __slots__ = ("id", "alt", "when", "tests")

    def __init__(self, rid: str, alt: Alt, tests: tuple[Any, ...]) -> None:
        self.id = rid
        self.alt = alt
        self.when = alt.when
        self.tests = tests


class CompiledRule:
    """A rule's alternatives that hold in one kernel, as token tests."""

    __slots__ = ("rule", "name", "read", "write", "read_ids", "write_text", "read_text",
                 "label_r", "label_w", "read_verdicts")

    def __init__(self, rule: Rule, read: list[CompiledAlt], write: list[CompiledAlt],
                 release: str | None) -> None:
        self.rule = rule
        self.name = rule.name
        self.read = read
        self.write = write
        self.read_ids = [a.id for a in read]
        self.read_text = " | ".join(alt_text(a.alt, release=release) for a in read) or "none"
        self.write_text = " | ".join(alt_text(a.alt, release=release) for a in write) or "none"
        self.label_r = f"read {rule.name}"
        self.label_w = f"write {rule.name}"
        self.read_verdicts: dict[int, int] = {}  # lock-fact mask -> verdict


class RuleSet:
    """Every rule compiled for one kernel."""

    __slots__ = ("config", "rules", "per_vma", "pt_tests", "by_cond")

    def __init__(self, cfg: KernelConfig) -> None:
        self.config = cfg
        self.per_vma = _per_vma_locks(cfg)
        vt = _vma_tests(cfg)
        self.pt_tests = _pt_tests(cfg)
        self.rules: dict[str, CompiledRule] = {}
        for name, rule in RULES.items():
            tests: dict[str, Any] = self.pt_tests if rule.section == "pgtable" else vt
            read = self._compile(name, "read", rule.read, cfg, tests)
            write = self._compile(name, "write", rule.write, cfg, tests)
            self.rules[name] = CompiledRule(rule, read, write, cfg.release)
        self.by_cond: dict[str, dict[str, list[CompiledAlt]]] = {
            kind: {cond: [a for a in self.rules[kind].write if a.when == cond]
                   for cond in ("fill", "change", "table")}
            for kind in ("pte", "pmd", "pud")}

    def _compile(self, name: str, side: str, alts: tuple[Alt, ...], cfg: KernelConfig,
                 tests: dict[str, Any]) -> list[CompiledAlt]:
        out = []
        for i, alt in enumerate(alts):
            if not alt.in_kernel(cfg):
                continue
            if "VMA R" in alt.locks and not self.per_vma:
                continue  # no VMA read lock exists in this kernel
            out.append(CompiledAlt(rule_id(name, side, i), alt,
                                   tuple(tests[t] for t in alt.locks)))
        return out


_RULESETS: dict[tuple[str | None, frozenset[str]], RuleSet] = {}


def ruleset(cfg: KernelConfig) -> RuleSet:
    """The rules of kernel *cfg*, compiled once per distinct kernel."""
    key = (cfg.release, cfg.applied)
    rs = _RULESETS.get(key)
    if rs is None:
        rs = _RULESETS[key] = RuleSet(cfg)
    return rs


def ruleset_of(mm: Any) -> RuleSet:
    """The compiled rules *mm* is judged by (cached on the mm, with the
    kernel it was compiled for)."""
    cached = mm.ruleset
    cfg = mm.kernel
    if cached is not None and cached[0] is cfg:
        return cached[1]  # type: ignore[no-any-return]
    if cfg is None:
        cfg = kernel_config(mm)
    rs = ruleset(cfg)
    mm.ruleset = (cfg, rs)
    return rs


def _mark(ids: list[str]) -> None:
    _CONSULTED.update(ids)


def _breach(kind_text: str, title: str, detail: str, h: Held) -> None:
    if h.rules_off:
        return
    raise ViolationError("locking-rule", title, f"{detail}; held: {h.describe()}")


# --- VMA fields --------------------------------------------------------------------------------


# The lock facts one task's read verdict for a VMA depends on, as bits. The
# tokens of read rules and of their writers' exclusion are all functions of
# these (RCU aside: that is the sync layer's, tested when nothing else holds).
_MMAP, _MMAP_W, _VMA_R, _RMAP_R, _I_MMAP, _ANON, _PTL, _NUMAB = (1 << i for i in range(8))


def _vma_mask(vma: Any, h: Held) -> int:
    mm = vma._f_vm_mm
    mode = h.mmap.get(mm.serial)
    m = 0 if mode is None else (_MMAP | _MMAP_W if mode == "W" else _MMAP)
    if vma.serial in h.vma_read:
        m |= _VMA_R
    if h.rwsem:
        f = vma._f_vm_file
        if f is not None and f.f_mapping.i_mmap_rwsem.serial in h.rwsem:
            m |= _I_MMAP | (_RMAP_R if vma._f_shared_rb else 0)
        av = vma._f_anon_vma
        if av is not None and av.rwsem.serial in h.rwsem:
            m |= _ANON | _RMAP_R
    if h.spin and mm.page_table_lock.serial in h.spin:
        m |= _PTL
    if h.numab and mm.serial in h.numab:
        m |= _NUMAB
    return m


def _mask_reader(per_vma: bool) -> dict[str, Callable[[int], bool]]:
    """Read tokens as tests of a mask (RCU: never, see above)."""
    return {"mmap R": lambda m: bool(m & _MMAP),
            "VMA R": lambda m: per_vma and bool(m & _VMA_R),
            "rmap R": lambda m: bool(m & _RMAP_R)}


def _mask_excluder(per_vma: bool) -> dict[str, Callable[[int], bool]]:
    """For each writer token, whether a reader with this mask excludes it."""
    vma_w = _MMAP | (_VMA_R if per_vma else 0)
    return {"mmap W": lambda m: bool(m & _MMAP), "VMA W": lambda m: bool(m & vma_w),
            "rmap W": lambda m: bool(m & _RMAP_R), "i_mmap W": lambda m: bool(m & _I_MMAP),
            "anon_vma W": lambda m: bool(m & _ANON),
            "page_table_lock": lambda m: bool(m & _PTL),
            "numab": lambda m: bool(m & _NUMAB), "never": lambda m: True}


def _read_verdict(cr: CompiledRule, mask: int, per_vma: bool) -> int:
    """0: no lock-based alternative holds; 1: allowed, a visible operation;
    2: allowed, and every writer the rules allow is excluded (no operation)."""
    _mark(cr.read_ids)
    rd = _mask_reader(per_vma)
    ok = any(all(t in rd and rd[t](mask) for t in ca.alt.locks) for ca in cr.read)
    if not ok:
        code = 0
    else:
        ex = _mask_excluder(per_vma)
        skip = all(any(t in ex and ex[t](mask) for t in ca.alt.locks) for ca in cr.write)
        code = 2 if skip else 1
    cr.read_verdicts[mask] = code
    return code


def check_vma_read(vma: Any, name: str) -> None:
    """A read of field *name* of a visible VMA: a visible operation unless
    the reader holds a lock that excludes every writer the rules allow,
    then the rule check. Costs a few lookups: the VMA's lock facts for this
    task are kept against the task's lock-record version (and the VMA's
    rmap membership), the verdict per field and lock facts in the rule."""
    h = held()
    e = h.cache.get(vma.serial)
    if (e is not None and e[0] == h.version and e[1] is vma._f_anon_vma
            and e[2] is vma._f_shared_rb):
        mask = e[3]
        rs = e[4]
    else:
        rs = ruleset_of(vma._f_vm_mm)
        mask = _vma_mask(vma, h)
        h.cache[vma.serial] = (h.version, vma._f_anon_vma, vma._f_shared_rb, mask, rs)
    cr = rs.rules[name]
    code = cr.read_verdicts.get(mask)
    if code is None:
        code = _read_verdict(cr, mask, rs.per_vma)
    if code == 2 and not h.rules_off:
        # A read under a lock that excludes every rule-abiding writer needs
        # no scheduling point: such a write is ordered against it by that
        # lock's own visible operations, and a write that breaks the rules
        # is reported on the writer's side in every execution that reaches
        # it, so moving this read to the thread's previous visible operation
        # (already inside the locked section) loses no race. A freed VMA is
        # still a use-after-free.
        if vma.freed_at is not None:
            kobject_access(vma, READ, cr.label_r)
        return
    kobject_access(vma, READ, cr.label_r)
    if code == 0 and not any(all(t(vma, h, None) for t in ca.tests) for ca in cr.read):
        _breach("read", f"locking rule: read of {vma.name}.{name} without the required locks",
                f"read of {name} of {vma!r} needs {cr.read_text}", h)


def _condition(name: str, old: Any, new: Any) -> str:
    if old is None and new is not None:
        return "set"
    if old is not None and new is None:
        return "clear"
    return ""


def check_vma_write(vma: Any, name: str, new: Any, *, atomic: bool = False) -> None:
    """A write of field *name* of a visible VMA (always a visible operation),
    checked against the write rule. *atomic*: the write is an atomic
    operation on the field (it satisfies the ``atomic`` token)."""
    h = held()
    kobject_access(vma, WRITE, "write " + name)
    cr = ruleset_of(vma._f_vm_mm).rules[name]
    old = getattr(vma, "_f_" + name.replace(".", "_"))
    prior = old if name == "anon_vma" else None
    cond = _condition(name, old, new)
    ok = False
    for ca in cr.write:
        if ca.when and ca.when != cond:
            continue
        _CONSULTED.add(ca.id)
        if not ok and all(t(vma, h, prior) or (atomic and tok == "atomic")
                          for t, tok in zip(ca.tests, ca.alt.locks, strict=True)):
            ok = True
    if ok or (name == "anon_vma" and old is new):
        return
    verb = "atomic write" if atomic else "write"
    _breach("write", f"locking rule: {verb} of {vma.name}.{name} without the required locks",
            f"{verb} of {name} of {vma!r} needs {cr.write_text}", h)


def vma_access(vma: Any, field: str, write: bool, new: Any) -> None:
    """One checked access to a visible VMA's field (``mm_types._Field``
    calls the two checks directly)."""
    if write:
        check_vma_write(vma, field, new)
    else:
        check_vma_read(vma, field)


# --- mm fields ---------------------------------------------------------------------------------


def check_mm_field(mm: Any, name: str, write: bool) -> None:
    """A read or write of a checked ``mm_struct`` field (``mm.map_count``).
    Not a visible operation: every write needs the mmap write lock, which
    excludes every reader the rules allow, so a rule-abiding access races
    with nothing; a rule-breaking one is reported here, in every execution
    that reaches it."""
    h = held()
    cr = ruleset_of(mm).rules[name]
    alts = cr.write if write else cr.read
    _mark([a.id for a in alts])
    for ca in alts:
        if all(_mm_token(t, mm, h) for t in ca.alt.locks):
            return
    verb = "write" if write else "read"
    _breach(verb, f"locking rule: {verb} of {mm.name}.{name.removeprefix('mm.')} without the "
            "required locks", f"{verb} of {name} of {mm.name} needs "
            f"{cr.write_text if write else cr.read_text}", h)


def _mm_token(token: str, mm: Any, h: Held) -> bool:
    if token == "mmap R":
        return mm.serial in h.mmap
    if token == "mmap W":
        return h.mmap.get(mm.serial) == "W"
    if token == "RCU":
        return rcu_read_lock_held()
    if token == "page_table_lock":
        return mm.page_table_lock.serial in h.spin
    return False


def check_mm_tree(mm: Any, write: bool) -> None:
    """A walk (read) or store (write) of the mm's VMA tree (``mm.mm_mt``)."""
    h = held()
    if not write and mm.serial in h.mmap:
        _CONSULTED.add("mm.mm_mt.read.0")
        return
    check_mm_field(mm, "mm.mm_mt", write)


# --- page-table entries ------------------------------------------------------------------------


class PtAccess:
    """What a page-table rule looks at: the level (``pte``/``pmd``/``pud``),
    the mm, the address span the entry maps, the table's own lock and (for an
    entry pointing to a PTE table) that table's lock, and the VMA when the
    caller knows it (free_pgtables)."""

    __slots__ = ("kind", "mm", "lo", "hi", "own_ptl", "child_ptl", "vma")

    def __init__(self, kind: str, mm: Any, lo: int, hi: int, own_ptl: Any, child_ptl: Any,
                 vma: Any = None) -> None:
        self.kind = kind
        self.mm = mm
        self.lo = lo
        self.hi = hi
        self.own_ptl = own_ptl
        self.child_ptl = child_ptl
        self.vma = vma


PtTest = Callable[[PtAccess, Held], bool]


def _overlapping(acc: PtAccess) -> list[Any]:
    """The VMAs of the mm that overlap the span (debugger view of the tree:
    the caller holds the locks that make this stable, or the rule fails)."""
    return [v for s, e, v in acc.mm.mm_mt.entries() if s < acc.hi and acc.lo < e]


def _spin(lock: Any, h: Held) -> bool:
    return lock is not None and lock.serial in h.spin


def _rmap_covers(acc: PtAccess, h: Held, write: bool) -> bool:
    if write:
        vmas = _overlapping(acc) or ([acc.vma] if acc.vma is not None else [])
        return all(_rmap_w(v, h) for v in vmas)
    for owner in h.rmap.values():
        members = getattr(owner, "i_mmap", None)
        if members is None:
            members = {k: getattr(v, "vma", v) for k, v in owner.rb_root.items()}
        for v in members.values():
            if (v._f_vm_mm is acc.mm and v._f_vm_start < acc.hi
                    and acc.lo < v._f_vm_end):
                return True
    return False


def _pt_tests(cfg: KernelConfig) -> dict[str, PtTest]:
    per_vma = _per_vma_locks(cfg)

    def vma_r(acc: PtAccess, h: Held) -> bool:
        return any(v._f_vm_mm is acc.mm and v._f_vm_start < acc.hi and acc.lo < v._f_vm_end
                   for v in h.vma_read.values())

    def mmap_w(acc: PtAccess, h: Held) -> bool:
        return h.mmap.get(acc.mm.serial) == "W"

    def vma_w(acc: PtAccess, h: Held) -> bool:
        if not mmap_w(acc, h):
            return False
        return all(_vma_write_locked(v, h) for v in _overlapping(acc))

    def unreachable(acc: PtAccess, h: Held) -> bool:
        v = acc.vma
        return v is not None and _detached(v) and not rmap_reachable(v)

    def never(acc: PtAccess, h: Held) -> bool:
        return False

    return {
        "mmap R": lambda acc, h: acc.mm.serial in h.mmap,
        "mmap W": mmap_w,
        "VMA R": vma_r if per_vma else never,
        "VMA W": vma_w if per_vma else mmap_w,
        "rmap R": lambda acc, h: _rmap_covers(acc, h, False),
        "rmap W": lambda acc, h: _rmap_covers(acc, h, True),
        "RCU": lambda acc, h: rcu_read_lock_held(),
        "IRQs off": lambda acc, h: irqs_disabled(),
        "page_table_lock": lambda acc, h: _spin(acc.mm.page_table_lock, h),
        "pte ptl": lambda acc, h: _spin(acc.own_ptl if acc.kind == "pte" else acc.child_ptl, h),
        "pmd ptl": lambda acc, h: _spin(acc.own_ptl, h),
        "unreachable": unreachable,
        # Only check_pte_table_free knows how a table is freed.
        "rcu free": never,
        "i_mmap W": never, "anon_vma W": never, "detached": never, "numab": never,
        "driver": never, "atomic": never, "never": never,
    }


_WHAT = {"fill": "fill of an empty entry", "change": "change of a present entry",
         "table": "change of an entry pointing to a page table"}


def _where(table: Any, index: int) -> str:
    return f"{table.name}[{index}] (address {table.addr_of(index):#x})"


def check_pgtable_write(acc: PtAccess, cond: str, table: Any, index: int) -> None:
    """A write of entry *index* of page table *table*, of kind *cond*
    (``fill``, ``change``, ``table``)."""
    h = held()
    rs = ruleset_of(acc.mm)
    alts = rs.by_cond[acc.kind][cond]
    ok = False
    for ca in alts:
        _CONSULTED.add(ca.id)
        if not ok:
            for t in ca.tests:
                if not t(acc, h):
                    break
            else:
                ok = True
    if ok:
        return
    cr = rs.rules[acc.kind]
    needs = " | ".join(alt_text(ca.alt, show_when=False, release=rs.config.release)
                       for ca in alts) or "nothing allows it"
    what = _WHAT[cond]
    _breach("write", f"locking rule: {what} of {acc.kind} entry without the required locks",
            f"{what} of {_where(table, index)} [{CONDITIONS[cond]}] needs {needs}. Rule: "
            f"{cr.rule.note}", h)


def check_atomicity(mm: Any, where: str, old: str, new: str) -> None:
    """A plain store over a present leaf that drops an accessed or dirty bit
    the entry has: the ``atomic-rmw`` requirement (``ATOMICITY``)."""
    _CONSULTED.add("atomicity.atomic-rmw")
    _breach("atomic", "locking rule: a plain store drops accessed/dirty bits of a present "
            "entry", f"set_pte_at of {where} replaces {old} with {new}: the MMU sets "
            "accessed and dirty bits concurrently, so only an atomic "
            "read-modify-write may clear them (ptep_get_and_clear, ptep_test_and_clear_young, "
            "ptep_modify_prot_start)", held())


_READ_IDS = {kind: f"{kind}.read.0" for kind in ("pte", "pmd", "pud")}
_VMA_READ_IDS = {kind: f"{kind}.read.1" for kind in ("pte", "pmd", "pud")}


def entry_read_fast(table: Any, index: int, kind: str, h: Held) -> bool:
    """The fast path of an entry read: the mmap lock (in every era the first
    alternative) or a VMA read lock on a VMA over the entry. False: not
    decided here (see check_pgtable_read)."""
    mm = table.mm
    if mm.serial in h.mmap:
        _CONSULTED.add(_READ_IDS[kind])
        return True
    if h.vma_read:
        lo = table.addr_of(index)
        hi = table.addr_of(index + 1)
        for v in h.vma_read.values():
            if v._f_vm_mm is mm and v._f_vm_start < hi and lo < v._f_vm_end:
                _CONSULTED.add(_VMA_READ_IDS[kind])
                return True
    return False


def check_pgtable_read(acc: PtAccess, key: int, table: Any, index: int) -> None:
    """An entry read: needs a lock that keeps the VMA stable, or (since 6.5)
    RCU. Cached per table against the thread's lock-record version."""
    h = held()
    e = h.cache.get(key)
    if e is not None and e == h.version:
        return
    cr = ruleset_of(acc.mm).rules[acc.kind]
    _mark(cr.read_ids)
    for ca in cr.read:
        if all(t(acc, h) for t in ca.tests):
            if ca.alt.locks != ("RCU",):  # not kept: see check_vma_read
                h.cache[key] = h.version
            return
    _breach("read", f"locking rule: read of {acc.kind} entry without the required locks",
            f"read of {_where(table, index)} needs {cr.read_text}", h)


def check_free_pgtables(vma: Any, mm: Any) -> None:
    """``free_pgtables`` on *vma*: the ``pgtables`` rule's free_pgtables
    alternative (mmap lock held, VMA unreachable)."""
    h = held()
    cr = ruleset_of(mm).rules["pgtables"]
    acc = PtAccess("pmd", mm, vma._f_vm_start, vma._f_vm_end, None, None, vma)
    for ca in cr.write:
        if ca.when != "free_pgtables":
            continue
        _CONSULTED.add(ca.id)
        if all(t(acc, h) for t in ca.tests):
            return
    where = rmap_reachable(vma)
    if where:
        _breach("free", "locking rule: free_pgtables on a VMA still reachable through the rmap",
                f"free_pgtables of {vma!r} while it is still reachable through {where}: page "
                "tables may be freed only once no rmap walker can reach them", h)
    _breach("free", "locking rule: free_pgtables without the mmap lock",
            f"free_pgtables of {vma!r} needs the mmap lock and an unreachable VMA", h)


def check_pte_table_free(acc: PtAccess, deferred: bool) -> None:
    """Freeing a PTE table that was unlinked outside free_pgtables (khugepaged
    retraction): *acc* describes the PMD entry that pointed to it (``kind``
    ``pmd``, ``child_ptl`` the freed table's lock); *deferred* whether it is
    freed after an RCU grace period (``pte_free_defer``)."""
    h = held()
    cr = ruleset_of(acc.mm).rules["pgtables"]
    for ca in cr.write:
        if ca.when != "retract":
            continue
        _CONSULTED.add(ca.id)
        if all(t(acc, h) or (deferred and tok == "rcu free")
               for t, tok in zip(ca.tests, ca.alt.locks, strict=True)):
            return
    needs = " | ".join(alt_text(ca.alt, show_when=False) for ca in cr.write
                       if ca.when == "retract")
    how = "pte_free_defer" if deferred else "pte_free"
    _breach("free", "locking rule: a retracted PTE table freed without the required locks",
            f"{how} of the PTE table at {acc.lo:#x} needs {needs}", h)


# --- lock states -------------------------------------------------------------------------------


def _mmap_state(h: Held, mm: Any) -> str:
    mode = h.mmap.get(mm.serial)
    return "-" if mode is None else ("W" if mode == "W" else "R")


def vma_lock_state(h: Held, vma: Any, rs: RuleSet) -> tuple[str, str, str]:
    """(mmap, VMA, rmap) of *vma* for the task with lock record *h*."""
    mm = vma._f_vm_mm
    mmap = _mmap_state(h, mm)
    if vma.serial in h.vma_read:
        vstate = "R"
    elif mmap == "W" and (not rs.per_vma or _vma_write_locked(vma, h)):
        vstate = "W"
    else:
        vstate = "-"
    rmap = "-"
    if h.rwsem:
        locks = rmap_locks(vma)
        modes = [h.rwsem.get(s.serial) for s in locks]
        if locks and all(m == "W" for m in modes):
            rmap = "W"
        elif any(m is not None for m in modes):
            rmap = "R"
    return mmap, vstate, rmap


def _state_rows() -> dict[tuple[str, str, str], int]:
    """Every (mmap, VMA, rmap) state -> the first row of the table allowing it."""
    rows: dict[tuple[str, str, str], int] = {}
    for mmap in "-RW":
        for vma in "-RW":
            for rmap in "-RW":
                for i, row in enumerate(LOCK_STATES):
                    if row.matches(mmap, vma, rmap):
                        rows[(mmap, vma, rmap)] = i
                        break
    return rows


_STATE_ROWS = _state_rows()


_STATE_IDS = [f"lock-state.{i}" for i in range(len(LOCK_STATES))]


# The modelled documented exceptions by the lock state each allows.
_STATE_EXCEPTIONS: dict[tuple[str, str, str], list[str]] = {}
for _e in EXCEPTIONS:
    if _e.modelled:
        for _st in _e.states:
            _STATE_EXCEPTIONS.setdefault(_st, []).append(_e.name)
_PATHS = {e.name for e in EXCEPTIONS if e.modelled and e.states}


def exception_path_enter(name: str) -> None:
    """The calling task enters the code path of the documented exception
    *name* (``mm/rules.py`` EXCEPTIONS): until it leaves, the lock states
    that exception lists are valid for it. Nothing else is relaxed."""
    if name not in _PATHS:
        raise ValueError(f"no modelled documented exception {name!r}")
    h = held()
    h.paths[name] = h.paths.get(name, 0) + 1


def exception_path_leave(name: str) -> None:
    """The calling task leaves the code path of exception *name*."""
    h = held()
    depth = h.paths.get(name, 0) - 1
    if depth > 0:
        h.paths[name] = depth
    else:
        h.paths.pop(name, None)


def _check_state(h: Held, state: tuple[str, str, str], what: str, vma: Any) -> None:
    i = _STATE_ROWS.get(state)
    if i is not None:
        _CONSULTED.add(_STATE_IDS[i])
        return
    if h.paths:
        for name in _STATE_EXCEPTIONS.get(state, ()):
            if name in h.paths:
                _CONSULTED.add(f"exception.{name}")
                return
    name = vma.name if vma is not None else "a VMA"
    _breach("state", f"locking rule: invalid lock state {'/'.join(state)} of {name}",
            f"after {what}, {name} is in lock state mmap {state[0]}, VMA {state[1]}, rmap "
            f"{state[2]}: no row of the lock-state table allows it", h)


def check_lock_state(what: str, *, mm: Any = None, vma: Any = None, rmap: Any = None) -> None:
    """At a lock transition (*what*), the lock state of every VMA it changes
    must be a row of the lock-state table: for a VMA lock, that VMA; for an
    rmap lock, the VMAs in that rmap tree; for the mmap lock, the mm's state
    alone and the VMAs this task also holds a VMA read lock on."""
    h = held()
    if vma is not None:
        rs = ruleset_of(vma._f_vm_mm)
        _check_state(h, vma_lock_state(h, vma, rs), what, vma)
        return
    if rmap is not None:
        members = getattr(rmap, "i_mmap", None)
        vmas = list(members.values()) if members is not None else [
            getattr(v, "vma", v) for v in rmap.rb_root.values()]
        for v in vmas:
            if v.freed_at is None:
                _check_state(h, vma_lock_state(h, v, ruleset_of(v._f_vm_mm)), what, v)
        return
    if mm is not None:
        _check_state(h, (_mmap_state(h, mm), "-", "-"), what, None)
        if h.vma_read:
            rs = ruleset_of(mm)
            for v in h.vma_read.values():
                if v._f_vm_mm is mm:
                    _check_state(h, vma_lock_state(h, v, rs), what, v)


_EXCLUSION_IDS = {m: f"mmap-exclusion.{m}" for m in MMAP_LOCK_EXCLUSION}


def check_mmap_exclusion(mm: Any, mode: str) -> None:
    """After this task got *mm*'s mmap lock in *mode* (R, D or W), no other
    task may hold it in a mode the R/D/W table says excludes it."""
    h = held()
    _CONSULTED.add(_EXCLUSION_IDS[mode])
    row = MMAP_LOCK_EXCLUSION[mode]
    for other in all_held().values():
        if other is h:
            continue
        theirs = other.mmap.get(mm.serial)
        if theirs is not None and row[theirs]:
            _breach("state", f"locking rule: mmap lock held {mode} while another task holds "
                    f"it {theirs}", f"{mm.mmap_lock.name}: mode {mode} and mode {theirs} "
                    "exclude each other", h)


def check_mmap_lock_nesting(mm: Any) -> None:
    """Before a blocking mmap lock acquisition: not while holding a VMA read
    lock (FORBIDDEN_NESTING)."""
    h = held()
    if not h.vma_read:
        return
    _CONSULTED.add("forbidden-nesting.0")
    if h.rules_off:
        return
    held_name, taken, why = FORBIDDEN_NESTING[0]
    vmas = ", ".join(v.name for v in h.vma_read.values())
    raise ViolationError(
        "lock-order", f"lock order: {taken} taken while holding {held_name} ({vmas})",
        f"taking {mm.mmap_lock.name} while holding the VMA read lock of {vmas}: {why}; "
        f"held: {h.describe()}")


def vma_write_lock_order() -> None:
    """The VMA write lock's place in the lock order, checked where
    ``vma_start_write`` takes it."""
    lock_order_point("vma_start_write")


def folio_lock_order() -> None:
    """The folio lock's place in the lock order, where ``folio_lock`` sleeps."""
    lock_order_point("folio_lock")


# --- the documented lock order, for lockdep ----------------------------------------------------


class _OrderTables:
    """The hierarchy's closure, computed once (``rules.lock_order_closure``)."""

    def __init__(self) -> None:
        self.before, contradictions = lock_order_closure()
        self.by_suffix = [(c, lv.name) for lv in LOCK_ORDER for c in lv.classes
                          if c.startswith(".")]
        self.by_key = {c: lv.name for lv in LOCK_ORDER for c in lv.classes
                       if not c.startswith(".")}
        self.edges = {(a, b) for a, b, _ in LOCK_ORDER_EDGES} - set(contradictions)
        self.seen: set[tuple[str, str]] = set()  # pairs already recorded as consulted


_ORDER = _OrderTables()


class MmLockOrder:
    """mm/rmap.c's hierarchy plus mm/filemap.c's pairwise orderings, as
    lockdep's :class:`~mmrace.sync.lockdep.DocumentedOrder`, for one
    execution (the levels of its lock objects: registered by the mm objects
    that create them, else by lockdep class or name)."""

    def __init__(self, registered: dict[int, str]) -> None:
        self.registered = registered
        self.levels: dict[int, str | None] = {}

    def level(self, lock: SharedObject | None, key: str) -> str | None:
        if lock is None:
            return _ORDER.by_key.get(key)
        serial = lock.serial
        if serial in self.levels:
            return self.levels[serial]
        name = self.registered.get(serial) or _ORDER.by_key.get(key)
        if name is None:
            for suffix, lv in _ORDER.by_suffix:
                if lock.name.endswith(suffix):
                    name = lv
                    break
        self.levels[serial] = name
        return name

    def must_precede(self, first: str, then: str) -> bool:
        return then in _ORDER.before[first]

    def consulted(self, held: str, new: str) -> None:
        pair = (held, new)
        if pair in _ORDER.seen:
            return
        _ORDER.seen.add(pair)
        _CONSULTED.add(f"lock-order.{held}")
        _CONSULTED.add(f"lock-order.{new}")
        if pair in _ORDER.edges:
            _CONSULTED.add(f"lock-order.{held}>{new}")


def register_lock_level(lock: SharedObject, level: str) -> None:
    """Place *lock* in the documented lock order (constructors of mm objects
    call it for the locks they create)."""
    execution_local("mm.lock_levels", dict)[lock.serial] = level


def install_lock_order() -> None:
    """Have lockdep check this execution's acquisitions against the
    documented order (``MmStruct`` does it when an mm is created)."""
    ex = current_execution()
    if "mm.lock_order" not in ex.locals:
        order = MmLockOrder(execution_local("mm.lock_levels", dict))
        ex.locals["mm.lock_order"] = order
        set_documented_order(order)


__all__ = [
    "MmLockOrder",
    "PtAccess",
    "RuleSet",
    "check_atomicity",
    "check_free_pgtables",
    "check_lock_state",
    "check_mm_field",
    "check_mm_tree",
    "check_mmap_exclusion",
    "check_mmap_lock_nesting",
    "check_pgtable_read",
    "check_pgtable_write",
    "check_pte_table_free",
    "check_vma_read",
    "check_vma_write",
    "consulted",
    "entry_read_fast",
    "exception_path_enter",
    "exception_path_leave",
    "install_lock_order",
    "locking_rules_off",
    "register_lock_level",
    "reset_consulted",
    "rmap_locks",
    "ruleset",
    "vma_access",
]
