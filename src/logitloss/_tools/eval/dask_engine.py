"""``logitloss eval --engine dask``: the same evaluation, block by block on a Dask cluster.

:func:`~.evaluate.evaluate` plans the run (the same whole-input checks as the local engine)
and cuts the rows into blocks; :class:`Dask` maps :func:`~.evaluate.evaluate_block` (the local
engine's per-chunk function) over them; each task reads its own rows from disk (the
inputs are lazy sources: paths and offsets, see ``sources``), so no worker ever holds more than
a block. Tasks return exact partial summaries, merged on the client in any order to the same
numbers as the local engine, and their losses only when ``--out`` asks for them.

Without ``--scheduler`` the command starts a ``LocalCluster`` of worker *processes* (one thread
each): a memory limit is enforced per process, by the nanny, which a threaded cluster cannot do.

A worker's memory, measured (``tests/test_eval_dask.py``: 2 workers of 320 MiB, float32 sigmoid
losses of 4 classes, 5 MiB blocks): 60 MiB idle, about 180 MiB once numba and the kernels are
loaded from numba's on-disk cache, 15-20 MiB more while a block runs (peaks of 210-217 MiB,
whatever the dataset's size). Kernels compiled in the worker itself (a fresh install, an empty
cache) took it to 235 MiB (serial kernels) or 260 MiB (serial and parallel) and kept it there:
above the 80 % at which Dask pauses a 320 MiB worker once a block is added. So

- a task holds its block's logits and labels and their losses (blocks default to 1/64 of the
  smallest worker memory limit): no copy of the labels, no float64 temporaries of block size;
- the client evaluates a few rows itself before mapping the blocks: that compiles the kernels
  once, into numba's cache, and the workers on the same machine load them from there;
- the ``LocalCluster``'s workers run the kernels single-threaded (``NUMBA_NUM_THREADS=1``, as
  Dask sets ``OMP_NUM_THREADS=1``): the serial kernels, the ones the client's few rows compiled
  (a block of 65 536 logits or more would take the parallel ones, compiled in the worker), and
  no threads competing with the other workers' processes for the cores;
- each block's result is released on the workers as soon as the client has it (with ``--out``
  it holds the block's losses, which would otherwise stay until the end of the run).
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..files import DataError
from .evaluate import (
    CHUNK_BYTES,
    Block,
    Plan,
    Result,
    default_chunk_rows,
    evaluate,
    evaluate_block,
)

# A block's logits take at most this fraction of a worker's memory limit.
BLOCK_FRACTION = 64
# The LocalCluster's workers: one thread each, the kernels' too (module docstring).
WORKER_ENV = {"NUMBA_NUM_THREADS": "1"}
# Rows the client evaluates itself first, to compile the kernels before the workers need them.
WARM_UP_ROWS = 8


@contextlib.contextmanager
def connect(
    scheduler: str | None, workers: int = 2, worker_memory: str | int = "1GiB"
) -> Iterator[Any]:
    """A ``distributed.Client``: to ``scheduler``, or to a new ``LocalCluster`` of ``workers``
    one-thread processes limited to ``worker_memory`` each, closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise DataError("--engine dask needs distributed (pip install logitloss[dask])") from None
    if scheduler is not None:
        try:
            client = Client(scheduler, timeout="10s")
        except OSError as error:
            raise DataError(f"--scheduler: cannot connect to {scheduler} ({error})") from None
        with client:
            yield client
        return
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        memory_limit=worker_memory,
        # A free port: None means 8787, which a second cluster finds taken (and warns).
        dashboard_address=":0",
        silence_logs=logging.ERROR,
        env=WORKER_ENV,
    )
    with cluster, Client(cluster) as client:
        yield client


def block_rows(client: Any, logits: Any) -> int:
    """Rows per block: about 1/BLOCK_FRACTION of the smallest worker memory limit of logits."""
    limits = [w.get("memory_limit") or 0 for w in client.scheduler_info()["workers"].values()]
    limits = [limit for limit in limits if limit > 0]
    budget = min(limits) // BLOCK_FRACTION if limits else CHUNK_BYTES
    return default_chunk_rows(logits, min(CHUNK_BYTES, max(budget, 2**16)))


def _block(start: int, stop: int, *, job: Plan, logits: Any, labels: Any, keep: bool) -> Block:
    """One task: read rows ``start:stop`` of both inputs, evaluate them, keep losses if asked."""
    loss, result = evaluate_block(job, logits[start:stop], labels[start:stop], start)
    return start, stop, (loss if keep else None), result


@dataclass(frozen=True)
class Dask:
    """The engine of ``--engine dask`` (:class:`~.evaluate.Engine`): the blocks mapped over
    ``client``'s cluster, their results in completion order."""

    client: Any

    def chunk_rows(self, logits: Any) -> int:
        return block_rows(self.client, logits)

    def run(
        self, job: Plan, logits: Any, labels: Any, bounds: list[tuple[int, int]], keep: bool
    ) -> Generator[Block, None, None]:
        from distributed import as_completed

        client = self.client
        # Compiles the kernels here (or loads them from numba's cache) before any worker needs
        # them: the workers on this machine then load them from the cache, which takes less
        # memory.
        evaluate_block(job, logits[:WARM_UP_ROWS], labels[:WARM_UP_ROWS], 0)
        # In-memory arrays (.npz, CSV) go to the cluster once; lazy sources travel as paths.
        inputs = [client.scatter(a) if isinstance(a, np.ndarray) else a for a in (logits, labels)]
        futures = client.map(
            _block,
            [start for start, _ in bounds],
            [stop for _, stop in bounds],
            job=job,
            logits=inputs[0],
            labels=inputs[1],
            keep=keep,
            pure=False,
        )
        # Only the futures still running are held here (and cancelled on an error or an early
        # close): a finished block's future is released at once, so its result (with --out,
        # its losses) leaves the worker's memory instead of staying there until the end.
        running = {future.key: future for future in futures}
        completed = as_completed(futures, with_results=True)
        del futures
        try:
            for future, block in completed:
                del running[future.key]
                future.release()
                yield block
        finally:
            client.cancel(list(running.values()))


def evaluate_dask(client: Any, kind: str, logits: Any, labels: Any, **options: Any) -> Result:
    """The loss ``kind`` of ``logits`` against ``labels`` on ``client``'s cluster, summarised.

    Same arguments and result as :func:`~.evaluate.evaluate`; ``sink`` gets blocks in
    completion order, each with its first row.
    """
    return evaluate(kind, logits, labels, engine=Dask(client), **options)


# Peak memory of the workers, sampled in a thread on each worker (for --engine dask's report
# and the test that shows the memory stays bounded).


def _watch_start(dask_worker: Any) -> int:
    import os

    import psutil

    process = psutil.Process()
    state = {"peak": process.memory_info().rss, "stop": threading.Event(), "pid": os.getpid()}

    def sample() -> None:
        while not state["stop"].wait(0.005):
            state["peak"] = max(state["peak"], process.memory_info().rss)

    threading.Thread(target=sample, daemon=True, name="logitloss-memory").start()
    dask_worker._logitloss_memory = state
    return state["pid"]


def _watch_stop(dask_worker: Any) -> dict[str, Any]:
    state = getattr(dask_worker, "_logitloss_memory", None)
    if state is None:
        return {"peak": None, "pid": None, "status": str(dask_worker.status)}
    state["stop"].set()
    return {"peak": state["peak"], "pid": state["pid"], "status": str(dask_worker.status)}


@contextlib.contextmanager
def watch_memory(client: Any) -> Iterator[dict[str, dict[str, Any]]]:
    """Sample each worker's resident memory while the block runs; on exit the dict holds, per
    worker address, ``peak`` (bytes), ``pid``, ``limit``, ``status``, and ``restarted`` (the
    worker's process or address changed)."""
    before = client.run(_watch_start)
    report: dict[str, dict[str, Any]] = {}
    try:
        yield report
    finally:
        after = client.run(_watch_stop)
        limits = {a: w.get("memory_limit") for a, w in client.scheduler_info()["workers"].items()}
        for address, pid in before.items():
            state = after.get(address, {"peak": None, "pid": None, "status": "gone"})
            report[address] = {
                **state,
                "limit": limits.get(address),
                "restarted": state["pid"] != pid,
            }
