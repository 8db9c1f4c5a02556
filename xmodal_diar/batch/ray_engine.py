"""The Ray engine: Ray Core actors, each holding one loaded pipeline.

Files go longest first, one at a time to whichever actor is free (dynamic dispatch, so a
long file does not hold up a queue). An actor that dies (killed, out of memory, node
lost) is replaced and its file retried, at most ``max_retries`` times; what the dead
actor was writing is removed (:func:`xmodal_diar.outputs.remove_temporaries`). Outputs
go to ``out_dir`` from the workers themselves: on a cluster, inputs and ``out_dir`` must
be on storage every node sees under the same path.

Without ``address`` a local Ray is started for the job (``workers x cpus_per_worker``
CPUs, default: all) and stopped after it; with ``address`` (``auto`` or ``HOST:PORT``)
the job joins a cluster.
If Ray is already initialised (a test, a notebook), it is used and left running.
"""

from __future__ import annotations

import collections
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from xmodal_diar.batch.jobs import BatchOptions, DiarizeWorker, FileJob
from xmodal_diar.outputs import remove_temporaries


def _import_ray():
    try:
        import ray
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ValueError("--engine ray needs Ray: pip install 'xmodal-diar[ray]'") from exc
    return ray


def run_ray(
    jobs: Sequence[FileJob],
    options: BatchOptions,
    out_dir: str,
    on_result: Callable[[Dict[str, Any]], None],
    *,
    address: Optional[str] = None,
    workers: Optional[int] = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 1.0,
    max_retries: int = 2,
    on_submit: Optional[Callable[[Any, FileJob], None]] = None,
) -> None:
    """Diarize ``jobs`` on Ray actors; ``on_result(record)`` as each file finishes.

    ``on_submit(actor, job)`` is called after each dispatch (tests use it to kill a worker).
    """
    if not jobs:
        return
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        else:
            cpus = workers * cpus_per_worker if workers else os.cpu_count() or 1
            ray.init(num_cpus=max(1, round(cpus)), include_dashboard=False, log_to_driver=False,
                     logging_level=logging.ERROR)
        started_here = True
    gpu = options.device.startswith("cuda")
    resources = {"num_cpus": cpus_per_worker, "num_gpus": gpus_per_worker if gpu else 0}
    if workers is None:
        available = ray.cluster_resources()
        workers = int(available.get("CPU", 1) // cpus_per_worker)
        if gpu:
            workers = min(workers, int(available.get("GPU", 0) // gpus_per_worker))
    workers = max(1, min(int(workers), len(jobs)))
    worker_options = options if options.torch_threads else _with_threads(options, max(1, int(cpus_per_worker)))
    Actor = ray.remote(_RayWorker).options(max_restarts=0, max_task_retries=0, **resources)
    queue = collections.deque(sorted(jobs, key=lambda j: -j.duration))  # longest first
    attempts: Dict[str, int] = collections.Counter()
    idle: list = []
    starting: Dict[Any, Any] = {}  # ready() ref -> actor: an actor gets files once its pipeline is loaded
    inflight: Dict[Any, tuple] = {}  # process() ref -> (actor, job)

    def start_actor() -> None:
        actor = Actor.remote(worker_options, str(out_dir))
        starting[actor.ready.remote()] = actor

    for _ in range(workers):
        start_actor()
    try:
        while queue or inflight:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                attempts[job.uri] += 1
                inflight[actor.process.remote(job)] = (actor, job)
                if on_submit is not None:
                    on_submit(actor, job)
            ready, _ = ray.wait(list(inflight) + list(starting), num_returns=1, timeout=1.0)  # Ctrl-C stays prompt
            if not ready:
                continue
            ref = ready[0]
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                    idle.append(actor)
                except ray.exceptions.RayTaskError as exc:  # the pipeline does not load: stop the batch
                    raise exc.cause if isinstance(exc.cause, Exception) else RuntimeError(str(exc)) from None
                except ray.exceptions.RayError:  # died while starting (node lost): start another
                    start_actor()
                continue
            actor, job = inflight.pop(ref)
            try:
                record = ray.get(ref)
                idle.append(actor)
            except ray.exceptions.RayTaskError as exc:  # an exception the job did not catch
                idle.append(actor)
                record = _failed(job, f"{type(exc.cause).__name__ if exc.cause else 'error'}: {exc.cause or exc}")
            except ray.exceptions.RayError as exc:  # the actor died: replace it, retry the file
                _kill(ray, actor)
                _remove_temporaries(out_dir, job)
                start_actor()
                if attempts[job.uri] <= max_retries:
                    queue.appendleft(job)
                    continue
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                record = _failed(job, f"worker died {attempts[job.uri]} times ({type(exc).__name__}: {reason})")
            record["attempts"] = attempts[job.uri]
            on_result(record)
    finally:  # done or interrupted: stop the workers, drop what they were writing
        for actor in idle + list(starting.values()) + [actor for actor, _ in inflight.values()]:
            _kill(ray, actor)
        for _, job in inflight.values():
            _remove_temporaries(out_dir, job)
        if started_here:
            ray.shutdown()


class _RayWorker(DiarizeWorker):
    """A :class:`DiarizeWorker` whose loading error is raised by :meth:`ready` (a failing
    actor constructor would only say that the actor died)."""

    def __init__(self, options: BatchOptions, out_dir: str) -> None:
        self.load_error: Optional[Exception] = None
        try:
            super().__init__(options, out_dir)
        except Exception as exc:
            self.load_error = exc

    def ready(self) -> str:
        if self.load_error is not None:
            raise self.load_error
        return super().ready()


def _remove_temporaries(out_dir: str, job: FileJob) -> None:
    remove_temporaries(out_dir, f"{job.uri}.*")
    remove_temporaries(Path(out_dir) / "manifest", f"{job.uri}.*")


def _with_threads(options: BatchOptions, threads: int) -> BatchOptions:
    import dataclasses

    return dataclasses.replace(options, torch_threads=threads)


def _kill(ray, actor) -> None:
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already dead
        pass


def _failed(job: FileJob, error: str) -> Dict[str, Any]:
    return {"input": job.source, "uri": job.uri, "rttm": f"{job.uri}.rttm", "status": "failed", "error": error}
