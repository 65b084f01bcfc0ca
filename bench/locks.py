"""Lock-heavy workloads: what a lock operation costs next to a plain
visible operation.

Run: ``python bench/locks.py``. Target (issue 3): a lock operation costs at
most 2x a plain visible operation (a ``Var`` load).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from mmrace.engine import Var, explore, spawn
from mmrace.sync import (
    Mutex,
    RwSemaphore,
    Spinlock,
    down_read,
    down_write,
    mutex_lock,
    mutex_unlock,
    spin_lock,
    spin_unlock,
    up_read,
    up_write,
)

N = 20_000


_STEPS: dict[str, int] = {}


def _rate(program: Callable[[], None], pairs: int, strategy: str = "dpor") -> float:
    """Pairs per second over one execution of *program*."""
    start = time.perf_counter()
    r = explore(program, strategy, max_executions=1, max_steps=10 * pairs + 100, shrink=False)
    _STEPS["last"] = r.steps
    return pairs / (time.perf_counter() - start)


def _one_thread(body: Callable[[], None]) -> Callable[[], None]:
    def program() -> None:
        spawn(body, name="T1")

    return program


def lock_benchmarks(n: int = N) -> dict[str, float]:
    """Pairs (two visible operations) per second for each workload."""
    out: dict[str, float] = {}

    def plain() -> None:
        v = Var(0, "v")

        def body() -> None:
            for _ in range(n):
                v.load()
                v.load()

        spawn(body, name="T1")

    def mutex() -> None:
        m = Mutex("m")

        def body() -> None:
            for _ in range(n):
                mutex_lock(m)
                mutex_unlock(m)

        spawn(body, name="T1")

    def spin() -> None:
        s = Spinlock("s")

        def body() -> None:
            for _ in range(n):
                spin_lock(s)
                spin_unlock(s)

        spawn(body, name="T1")

    def rwsem() -> None:
        sem = RwSemaphore("sem")

        def body() -> None:
            for _ in range(n // 2):
                down_read(sem)
                up_read(sem)
                down_write(sem)
                up_write(sem)

        spawn(body, name="T1")

    def plain2() -> None:
        v = Var(0, "v")

        def body() -> None:
            for _ in range(n // 2):
                v.load()
                v.load()

        spawn(body, name="T1")
        spawn(body, name="T2")

    def contended() -> None:
        m = Mutex("m")

        def body() -> None:
            for _ in range(n // 2):
                mutex_lock(m)
                mutex_unlock(m)

        spawn(body, name="T1")
        spawn(body, name="T2")

    out["plain visible pairs/s (Var loads, 1 thread)"] = _rate(plain, n)
    out["uncontended mutex pairs/s"] = _rate(mutex, n)
    out["uncontended spinlock pairs/s"] = _rate(spin, n)
    out["uncontended rwsem pairs/s"] = _rate(rwsem, n)
    out["plain visible pairs/s (2 threads, dpor)"] = _rate(plain2, n)
    out["contended mutex pairs/s (2 threads, dpor)"] = _rate(contended, n)
    out["plain visible pairs/s (2 threads, random)"] = _rate(plain2, n, "random")
    out["contended mutex pairs/s (2 threads, random)"] = _rate(contended, n, "random")
    # A contended acquisition is two visible operations (queue, then the
    # wait that ends when the lock is handed over), so compare per operation.
    out["contended mutex visible ops/s (random)"] = (
        out["contended mutex pairs/s (2 threads, random)"] * _STEPS["last"] / n
    )
    out["plain visible ops/s (2 threads, random)"] = (
        2 * out["plain visible pairs/s (2 threads, random)"]
    )
    base = out["plain visible pairs/s (Var loads, 1 thread)"]
    out["cost ratio mutex/plain"] = base / out["uncontended mutex pairs/s"]
    out["cost ratio spinlock/plain"] = base / out["uncontended spinlock pairs/s"]
    out["cost ratio rwsem/plain"] = base / out["uncontended rwsem pairs/s"]
    out["cost ratio contended mutex/plain (dpor)"] = (
        out["plain visible pairs/s (2 threads, dpor)"]
        / out["contended mutex pairs/s (2 threads, dpor)"]
    )
    out["cost ratio contended mutex/plain (random)"] = (
        out["plain visible pairs/s (2 threads, random)"]
        / out["contended mutex pairs/s (2 threads, random)"]
    )
    out["cost ratio per op, contended mutex/plain (random)"] = (
        out["plain visible ops/s (2 threads, random)"]
        / out["contended mutex visible ops/s (random)"]
    )
    return out


if __name__ == "__main__":
    for name, value in lock_benchmarks().items():
        if name.startswith("cost ratio"):
            print(f"{name:48s} {value:10.2f}x")
        else:
            print(f"{name:48s} {value:10,.0f}")
