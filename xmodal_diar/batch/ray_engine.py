"""The Ray engine: Ray Core actors, each holding one loaded pipeline.

Files go longest first, one at a time to whichever actor is free (dynamic dispatch, so a
long file does not hold up a queue). An actor that dies (killed, out of memory, node
lost) is replaced and its file retried, at most ``max_retries`` times; what the dead
actor was writing is removed (:func:`xmodal_diar.outputs.remove_temporaries`). Outputs
go to ``out_dir`` from the workers themselves: on a cluster, inputs and ``out_dir`` must
be on storage every node sees under the same path.

Without ``address`` a local Ray is started for the job (``num_cpus`` = workers) and
stopped after it; with ``address`` (``auto`` or ``HOST:PORT``) the job joins a cluster.
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
            ray.init(num_cpus=int(workers or os.cpu_count() or 1), include_dashboard=False, log_to_driver=False,
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
    Actor = ray.remote(DiarizeWorker).options(max_restarts=0, max_task_retries=0, **resources)

    def new_actor():
        return Actor.remote(worker_options, str(out_dir))

    queue = collections.deque(sorted(jobs, key=lambda j: -j.duration))  # longest first
    attempts: Dict[str, int] = collections.Counter()
    idle = [new_actor() for _ in range(workers)]
    inflight: Dict[Any, tuple] = {}
    try:
        while queue or inflight:
            while idle and queue:
                actor, job = idle.pop(), queue.popleft()
                attempts[job.uri] += 1
                inflight[actor.process.remote(job)] = (actor, job)
                if on_submit is not None:
                    on_submit(actor, job)
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)  # a timeout keeps Ctrl-C prompt
            if not ready:
                continue
            ref = ready[0]
            actor, job = inflight.pop(ref)
            try:
                record = ray.get(ref)
                idle.append(actor)
            except ray.exceptions.RayTaskError as exc:  # an exception the job did not catch
                idle.append(actor)
                record = _failed(job, f"{type(exc.cause).__name__ if exc.cause else 'error'}: {exc.cause or exc}")
            except ray.exceptions.RayError as exc:  # the actor died: replace it, retry the file
                _kill(ray, actor)
                remove_temporaries(out_dir, f"{job.uri}.*")
                remove_temporaries(Path(out_dir) / "manifest", f"{job.uri}.*")
                idle.append(new_actor())
                if attempts[job.uri] <= max_retries:
                    queue.appendleft(job)
                    continue
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                record = _failed(job, f"worker died {attempts[job.uri]} times ({type(exc).__name__}: {reason})")
            record["attempts"] = attempts[job.uri]
            on_result(record)
    finally:
        for actor, job in inflight.values():  # interrupted: stop the workers, drop their temporaries
            _kill(ray, actor)
        for actor in idle:
            _kill(ray, actor)
        for actor, job in inflight.values():
            remove_temporaries(out_dir, f"{job.uri}.*")
            remove_temporaries(Path(out_dir) / "manifest", f"{job.uri}.*")
        if started_here:
            ray.shutdown()


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
