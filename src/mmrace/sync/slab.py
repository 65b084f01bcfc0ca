"""Object lifetime: allocation, ``kfree`` and SLAB_TYPESAFE_BY_RCU reuse.

A :class:`KObject` is a kernel object with a lifetime. Model code accesses
its fields through :meth:`KObject.load` / :meth:`KObject.store` (one visible
read or write of the object each) or, after its own visible operation on
the object, :meth:`KObject.check_alive`. ``kfree`` is a visible write of the
object, so DPOR orders every access against the free. Touching a freed
object is a ``use-after-free`` violation naming the object, where it was
freed and where it was accessed.

A class with ``SLAB_TYPESAFE_BY_RCU = True`` is never really freed:
``kfree`` returns the object to its cache, and a later
:func:`kmem_cache_alloc` of the same class reuses it as a new object (its
``generation`` increases and the given fields are re-initialised). A reader
still holding the old pointer sees a live object of another identity, as in
the kernel; it must recheck identity after taking a reference.

Left out: slab caches as separate objects (the cache is the Python class),
KASAN's redzones and quarantine, and partial-object overruns.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

from mmrace.engine import READ, RMW, WRITE, SharedObject, ViolationError, visible
from mmrace.sync._task import TaskState, sync_state, task

K = TypeVar("K", bound="KObject")


def _where(ts: TaskState, what: str) -> str:
    fn, ev = ts.where()
    if ev < 0:
        return f"{what} by {ts.name}"
    return f"{what} by {ts.name} in {fn or '?'} (event {ev})"


class KObject(SharedObject):
    """Base class for kernel objects with a lifetime."""

    SLAB_TYPESAFE_BY_RCU: ClassVar[bool] = False

    __slots__ = ("freed_at", "generation", "in_cache", "__dict__")

    def __init__(self, name: str = "", **fields: Any) -> None:
        super().__init__(name)
        self.freed_at: str | None = None
        self.generation = 0
        self.in_cache = False
        for k, v in fields.items():
            setattr(self, k, v)

    @property
    def freed(self) -> bool:
        """Whether the object has been freed (never, for typesafe classes)."""
        return self.freed_at is not None

    def check_alive(self, what: str = "access") -> None:
        """Raise ``use-after-free`` if the object has been freed. Call it
        right after a visible operation on this object."""
        if self.freed_at is not None:
            raise self._uaf(what)

    def _uaf(self, what: str) -> ViolationError:
        ts = task()
        return ViolationError(
            "use-after-free",
            f"use-after-free of {self.name}",
            f"BUG: KASAN: slab-use-after-free in {what} of {self.name}\n"
            f"accessed: {_where(ts, what)}\n"
            f"freed: {self.freed_at}\n" + ts.held_report(),
        )

    def load(self, field: str) -> Any:
        """Read *field*: one visible read of the object, checked for
        use-after-free."""
        ev = visible(self, READ, field)
        if self.freed_at is not None:
            raise self._uaf(f"load {field}")
        v = getattr(self, field)
        if ev is not None:
            ev.detail = v
        return v

    def store(self, field: str, value: Any) -> None:
        """Write *field*: one visible write of the object, checked for
        use-after-free."""
        ev = visible(self, WRITE, field)
        if self.freed_at is not None:
            raise self._uaf(f"store {field}")
        setattr(self, field, value)
        if ev is not None:
            ev.detail = value

    def access(self, kind: int, what: str) -> None:
        """A visible operation of *kind* on the object, checked for
        use-after-free (for fields kept outside the object)."""
        visible(self, kind, what)
        if self.freed_at is not None:
            raise self._uaf(what)


class SlabCache(SharedObject):
    """The free list of one SLAB_TYPESAFE_BY_RCU class in one execution."""

    __slots__ = ("free",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.free: list[Any] = []


def _cache(cls: type[Any]) -> SlabCache:
    caches = sync_state().slab_free
    c: SlabCache | None = caches.get(cls)
    if c is None:
        c = caches[cls] = SlabCache(f"kmem_cache({cls.__name__})")
    return c


def kfree(obj: KObject) -> None:
    """``kfree(obj)`` / ``kmem_cache_free``: one visible write of *obj*.
    Freeing a freed object is a ``use-after-free`` (double-free) violation.
    A SLAB_TYPESAFE_BY_RCU object goes back to its cache for reuse instead
    (one visible RMW of the cache, not of the object: readers may go on
    reading it)."""
    typesafe = type(obj).SLAB_TYPESAFE_BY_RCU
    if typesafe:
        cache = _cache(type(obj))
        ev = visible(cache, RMW, "kmem_cache_free")
    else:
        ev = visible(obj, WRITE, "kfree")
    if typesafe:
        _check_double_free(obj)
        obj.in_cache = True
        cache.free.append(obj)
        if ev is not None:
            ev.detail = obj.name
        return
    kfree_in_op(obj)


def kfree_in_op(obj: KObject) -> None:
    """The effect of ``kfree(obj)`` inside a visible operation the caller
    already made, whose footprint writes *obj* (a batch that frees several
    objects in one operation). Not for SLAB_TYPESAFE_BY_RCU objects."""
    assert not type(obj).SLAB_TYPESAFE_BY_RCU, "kfree_in_op of a typesafe-by-RCU object"
    _check_double_free(obj)
    obj.freed_at = _where(task(), "kfree")


def _check_double_free(obj: KObject) -> None:
    if obj.freed_at is not None or obj.in_cache:
        raise ViolationError(
            "use-after-free",
            f"double-free of {obj.name}",
            f"BUG: KASAN: double-free of {obj.name}\n"
            f"freed again: {_where(task(), 'kfree')}\nfirst freed: {obj.freed_at or 'earlier'}",
        )


def kmem_cache_alloc(cls: type[K], name: str = "", **fields: Any) -> K:
    """``kmem_cache_alloc``: a new object of *cls* with *fields* set. For a
    SLAB_TYPESAFE_BY_RCU class, an object freed earlier in this execution is
    reused first (one visible RMW of the cache, then one visible write of the
    object: its generation increases, *fields*
    are written, other fields keep their stale values, and it is renamed to
    *name* if given). A fresh object of an ordinary class costs no visible operation (nobody
    can see it yet)."""
    if cls.SLAB_TYPESAFE_BY_RCU:
        cache = _cache(cls)
        visible(cache, RMW, "kmem_cache_alloc")
        if cache.free:
            obj: K = cache.free.pop(0)
            ev = visible(obj, WRITE, "kmem_cache_alloc (reuse)")
            obj.in_cache = False
            obj.generation += 1
            for k, v in fields.items():
                setattr(obj, k, v)
            if name:
                obj.name = name
            if ev is not None:
                ev.detail = f"reused, generation {obj.generation}"
            return obj
    return cls(name, **fields)
