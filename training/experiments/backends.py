"""Where a sweep's cells run: local joblib workers (the default) or Ray tasks on a cluster.

Both backends take the same list of calls — (cell number, arguments of the cell function) — and yield
(number, record) as cells finish, so the driver caches each result as it arrives and a re-run resumes from the
cache. They differ in what they survive:

    joblib  one machine; a cell's worker saves its cell file itself. A worker that dies ends the sweep (the
            cells finished before it are cached).
    ray     a cluster (`ray start --head`, then --address auto) or a local Ray instance. Each cell is a task asking
            for its CPUs (the sweep's threads per cell) and a GPU when training on CUDA; the float checkpoints and
            the data travel through Ray's object store, so workers need the package but not the driver's files.
            A cell that fails or is lost with its worker or node is submitted again, up to max_retries times, by
            the driver (which therefore knows which cells were retried and why); a cell that still fails is
            reported without losing the others.

Ray is an optional dependency (pip install 'siq[cluster]'): it is imported only when the ray backend runs.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Callable, Iterator

import joblib

from siq.training.device import CUBLAS_WORKSPACE
from siq.training.errors import SiqError

BACKENDS = ("joblib", "ray")


@dataclass
class CellRuns:
    """What happened to the cells of one run_cells call: the failed attempts that were run again (number ->
    reasons), and the cells still failing after every retry (number -> last reason)."""
    retried: dict[int, list[str]] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)


def check_backend(backend: str, max_retries: int, address: str | None = None) -> None:
    """Refuse, before anything trains, a backend, retry count or cluster address that cannot work."""
    if backend not in BACKENDS:
        raise SiqError(f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise SiqError(f"max_retries must be a whole number >= 0, got {max_retries!r}")
    if address is not None:
        if backend != "ray":
            raise SiqError("an address joins a Ray cluster: use the ray backend (--backend ray)")
        _check_reachable(address)


def _check_reachable(address: str) -> None:
    """A HOST:PORT address must accept connections: Ray itself retries an unreachable one for minutes.
    ("auto" and ray:// addresses are left to Ray, which refuses them quickly.)"""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not port.isdigit():
        raise SiqError(f"Ray address {address!r}: write HOST:PORT (e.g. 10.0.0.1:6379) or auto")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise SiqError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start one with "
                       "`ray start --head` or use --address auto on a node of the cluster") from None


def run_cells(fn: Callable, calls: list[tuple[int, tuple]], runs: CellRuns, *, backend: str = "joblib",
              jobs: int = 1, address: str | None = None, cpus: int = 1, gpus: float = 0, max_retries: int = 2,
              progress: Callable[[int, int], None] | None = None) -> Iterator[tuple[int, dict]]:
    """(number, fn(*arguments)) for each call, in the order the cells finish. Failures and retries of the ray
    backend are recorded in `runs`; progress(running, failed) is called whenever those counts change."""
    if not calls:
        return iter(())
    if backend == "ray":
        return _ray_cells(fn, calls, runs, address, cpus, gpus, max_retries, progress)
    return _joblib_cells(fn, calls, jobs)


# ---------------------------------------------------------------- joblib

def _indexed(fn: Callable, n: int, arguments: tuple) -> tuple[int, dict]:
    return n, fn(*arguments)


def _joblib_cells(fn: Callable, calls: list[tuple[int, tuple]], jobs: int):
    """Results as the cells finish, or all at the end on joblib backends that cannot stream them."""
    tasks = [joblib.delayed(_indexed)(fn, n, arguments) for n, arguments in calls]
    try:
        return joblib.Parallel(n_jobs=jobs, return_as="generator_unordered")(tasks)
    except ValueError as exc:
        if "return_as" not in str(exc):
            raise
        return joblib.Parallel(n_jobs=jobs)(tasks)


# ---------------------------------------------------------------- ray

def _ray_call(fn: Callable, *arguments) -> dict:
    """A Ray task: one cell (its ObjectRef arguments arrive resolved)."""
    return fn(*arguments)


def _reason(exc: BaseException) -> str:
    """One line saying why an attempt failed: the cell's own exception, or what Ray lost."""
    cause = getattr(exc, "cause", None)
    text = f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else f"{type(exc).__name__}: {exc}"
    return text.strip().splitlines()[0][:200]


def _ray_cells(fn, calls, runs: CellRuns, address, cpus, gpus, max_retries, progress):
    try:
        import ray  # optional (siq[cluster]) and heavy: imported only when the ray backend is asked for
    except ImportError:
        raise SiqError("the ray backend needs Ray: pip install 'siq[cluster]' (or pip install ray)") from None
    started = not ray.is_initialized()
    if started:
        # workers inherit the deterministic cuBLAS setting (it must precede their first CUDA call)
        env = {"CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)}
        try:
            ray.init(address=address, include_dashboard=False, runtime_env={"env_vars": env},
                     logging_level="warning")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise SiqError(f"cannot reach the Ray cluster at {address or 'a new local instance'}: "
                           f"{str(exc).splitlines()[0][:160]} (start one with `ray start --head`)") from None
    remote = ray.remote(_ray_call).options(num_cpus=cpus, num_gpus=gpus, max_retries=0)
    # shared arguments (the data, each float checkpoint) go to the object store once, not once per cell
    shared: dict[int, object] = {}

    def stored(value):
        if not _large(value):
            return value
        if id(value) not in shared:  # the calls list keeps every value alive, so ids are not reused
            shared[id(value)] = ray.put(value)
        return shared[id(value)]

    def submit(n: int, arguments: tuple, attempt: int):
        pending[remote.remote(fn, *[stored(a) for a in arguments])] = (n, arguments, attempt)

    pending: dict = {}
    try:
        for n, arguments in calls:
            submit(n, arguments, 0)
        while pending:
            if progress is not None:
                progress(len(pending), len(runs.failed))
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            n, arguments, attempt = pending.pop(ref)
            try:
                record = ray.get(ref)
            except ray.exceptions.RayError as exc:
                if attempt < max_retries:
                    runs.retried.setdefault(n, []).append(_reason(exc))
                    submit(n, arguments, attempt + 1)
                else:
                    runs.failed[n] = _reason(exc)
                continue
            yield n, record
        if progress is not None:
            progress(0, len(runs.failed))
    finally:
        for ref in pending:  # interrupted: nothing left running for a driver that is gone
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


def _large(value) -> bool:
    """Data sets and checkpoints (worth one copy in the object store), not a cell's small settings."""
    if isinstance(value, bytes):
        return len(value) > 4096
    return isinstance(value, dict) and "train_x" in value
