"""Pools of workers for parallel explorations: the calling process
(``InlinePool``), forked local processes started as work appears
(``LocalPool``), a Dask cluster (``DaskPool``); and how many workers a
command gets (``pool_for``)."""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import time
import traceback
from typing import Any

from mmrace.engine.units import PoolError, Runner, UnitJob, UnitResult


class Pool:
    """Runs unit jobs. ``slots`` is how many run at once."""

    slots = 1
    name = "pool"

    def submit(self, fn: Runner, job: UnitJob) -> Any:
        raise NotImplementedError

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        """The handles among *handles* that are done (waits up to *timeout*
        seconds for one)."""
        raise NotImplementedError

    def result(self, handle: Any) -> UnitResult:
        raise NotImplementedError

    def cancel(self, handle: Any) -> None:
        pass

    def close(self) -> None:
        pass


class InlinePool(Pool):
    """The calling process as the worker: a job runs when it is submitted.
    With ``slots`` > 1 the driver splits work as it would for that many
    workers (deterministically: tests use it to exercise splitting)."""

    name = "inline"

    def __init__(self, slots: int = 1) -> None:
        self.slots = slots

    def submit(self, fn: Runner, job: UnitJob) -> Any:
        return _Done(fn(job))

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        return list(handles)

    def result(self, handle: Any) -> UnitResult:
        assert isinstance(handle, _Done)
        return handle.value


class _Done:
    __slots__ = ("value",)

    def __init__(self, value: UnitResult) -> None:
        self.value = value


def _worker_main(conn: Any) -> None:
    # Ctrl-C reaches the whole process group: the coordinator handles it and
    # tells the workers (they finish their slice, under a second).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        out: tuple[str, Any]
        try:
            msg = pickle.loads(raw)
            if msg is None:
                return
            fn, job = msg
            out = ("ok", fn(job))
        except PoolError as exc:
            out = ("pool-error", str(exc))
        except BaseException as exc:  # report, never die silently
            out = ("error", "".join(traceback.format_exception(exc)))
        try:
            conn.send(out)
        except (BrokenPipeError, OSError):
            return


class _Proc:
    __slots__ = ("proc", "conn", "busy")

    def __init__(self, proc: Any, conn: Any) -> None:
        self.proc = proc
        self.conn = conn
        self.busy = False


class LocalPool(Pool):
    """Worker processes on this machine (forked), started one by one only
    when a job finds every started one busy: never more than there is work
    for, and never more than *workers*."""

    name = "local"

    def __init__(self, workers: int) -> None:
        import multiprocessing

        if workers < 1:
            raise PoolError("--workers must be at least 1")
        self.slots = workers
        self.ctx = multiprocessing.get_context("fork")
        self.procs: list[_Proc] = []

    @property
    def started(self) -> int:
        return len(self.procs)

    def _start(self) -> _Proc:
        try:
            parent, child = self.ctx.Pipe()
            proc = self.ctx.Process(target=_worker_main, args=(child,), daemon=True)
            proc.start()
        except OSError as exc:
            raise PoolError(
                f"cannot start worker process {len(self.procs) + 1} of {self.slots}: "
                f"{exc.strerror or exc}"
            ) from None
        child.close()
        p = _Proc(proc, parent)
        self.procs.append(p)
        return p

    def submit(self, fn: Runner, job: UnitJob) -> Any:
        free = next((p for p in self.procs if not p.busy), None)
        if free is None:
            if len(self.procs) >= self.slots:
                raise RuntimeError("LocalPool: more jobs than workers")
            free = self._start()
        free.busy = True
        try:
            free.conn.send((fn, job))
        except (BrokenPipeError, OSError) as exc:
            raise PoolError(f"worker process {free.proc.pid} is gone: {exc}") from None
        return free

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        from multiprocessing.connection import wait

        by_conn = {h.conn: h for h in handles}
        ready = wait(list(by_conn), timeout)
        return [by_conn[c] for c in ready]

    def result(self, handle: Any) -> UnitResult:
        p: _Proc = handle
        try:
            status, value = p.conn.recv()
        except (EOFError, OSError):
            code = p.proc.exitcode
            raise PoolError(f"worker process {p.proc.pid} died (exit status {code})") from None
        p.busy = False
        if status == "pool-error":
            raise PoolError(value)
        if status == "error":
            raise RuntimeError(f"a worker failed:\n{value}")
        assert isinstance(value, UnitResult)
        return value

    def close(self) -> None:
        for p in self.procs:
            try:
                p.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        deadline = time.monotonic() + 1.0
        for p in self.procs:
            p.proc.join(max(0.0, deadline - time.monotonic()))
            if p.proc.is_alive():
                p.proc.terminate()
                p.proc.join(1.0)
            p.conn.close()
        self.procs = []


def _distributed() -> Any:
    """The ``distributed`` module (untyped: kept as Any)."""
    try:
        return importlib.import_module("distributed")
    except ImportError:
        raise PoolError("--dask needs Dask distributed: pip install 'mmrace[dask]'") from None


def _probe(address: str, timeout: float) -> None:
    """Fail fast (one line) when a tcp:// scheduler address does not answer:
    the Dask client would retry until its timeout."""
    import socket
    from urllib.parse import urlsplit

    if "://" not in address:
        address = "tcp://" + address
    if not address.startswith("tcp://"):
        return
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise PoolError(f"not a Dask scheduler address: {address}") from None
    if not host or port is None:
        raise PoolError(f"not a Dask scheduler address: {address} (expected tcp://HOST:PORT)")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise PoolError(f"cannot reach the Dask scheduler at {address}: "
                        f"{exc.strerror or exc}") from None


class DaskPool(Pool):
    """Workers of a Dask distributed cluster. Each worker process runs one
    unit at a time (start workers with ``--nthreads 1``; threads of one
    process take turns). The program must be a :class:`ProgramSource` the
    workers can rebuild, with mmrace installed on them."""

    name = "dask"

    def __init__(self, address: Any, timeout: float = 10.0) -> None:
        self.dist = _distributed()
        Client = self.dist.Client
        if isinstance(address, str):
            _probe(address, timeout)
        try:
            if isinstance(address, str):
                self.client = Client(address, timeout=f"{timeout}s")
                self.own = True
            else:
                self.client = address  # a Client, or a LocalCluster
                self.own = False
                if not hasattr(address, "submit"):
                    self.client = Client(address, timeout=f"{timeout}s")
                    self.own = True
            nthreads = self.client.nthreads()
        except (OSError, TimeoutError, ValueError) as exc:
            raise PoolError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
        self.slots = max(1, sum(nthreads.values()))

    def submit(self, fn: Runner, job: UnitJob) -> Any:
        return self.client.submit(fn, job, pure=False)

    def wait(self, handles: list[Any], timeout: float) -> list[Any]:
        try:
            self.dist.wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            pass
        return [h for h in handles if h.done()]

    def result(self, handle: Any) -> UnitResult:
        try:
            value = handle.result()
        except (OSError, TimeoutError) as exc:
            raise PoolError(f"Dask: {exc}") from None
        assert isinstance(value, UnitResult)
        return value

    def cancel(self, handle: Any) -> None:
        handle.cancel()

    def close(self) -> None:
        if self.own:
            self.client.close()


def machine_cores() -> int:
    """The cores this process may run on (the default number of workers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


WORKER_MEMORY = 64 << 20
"""What a worker process needs, roughly (bytes): a forked interpreter with
the model and one exploration's state."""


def max_local_workers() -> int:
    """How many local worker processes this machine can start: within the
    user's process limit and the memory available."""
    limit = 1 << 16
    try:
        import resource

        soft, _hard = resource.getrlimit(resource.RLIMIT_NPROC)
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, max(1, soft // 2))
    except (ImportError, OSError, ValueError):
        pass
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        limit = min(limit, max(1, avail // WORKER_MEMORY))
    except (OSError, ValueError, AttributeError):
        pass
    return limit


def pool_for(workers: int | None, dask: str | None = None) -> Pool:
    """The pool a command asks for: a Dask cluster at *dask*, else *workers*
    local processes (default: the machine's cores). PoolError for a number
    the machine cannot start or a scheduler that cannot be reached."""
    if dask is not None:
        if workers is not None:
            raise PoolError("--workers and --dask do not go together: the Dask cluster's "
                            "workers are the workers")
        return DaskPool(dask)
    n = machine_cores() if workers is None else workers
    if n < 1:
        raise PoolError("--workers must be at least 1")
    most = max_local_workers()
    if n > most:
        raise PoolError(f"cannot start {n} worker processes: this machine can start about "
                        f"{most} (process limit and free memory)")
    return LocalPool(n) if n > 1 else InlinePool()
