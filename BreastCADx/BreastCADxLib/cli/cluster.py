"""`breastcadx batch --workers N | --scheduler tcp://HOST:PORT`: the batch's cases as Dask tasks.

Each worker process loads the models once (`ModelsPlugin.setup`) and runs `batch.compute` for one case at a
time, writing the case folder itself; the client (where the manifest is) collects the results.csv records.
With `--scheduler`, the manifest's paths and `--out` must be the same paths on every worker (a shared file
system). A worker lost while running a case: Dask runs the case again on another worker (up to
`distributed.scheduler.allowed-failures` times, default 3; the case's result.json counts the attempts), then
records it as an error naming the cause; a case is never dropped and its row is written once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from BreastCADxLib.errors import BreastCADxError


def worker_threads(workers_on_host: int) -> int:
    """Compute threads per worker process: BREASTCADX_THREADS, else the host's cores shared among its workers."""
    env = os.environ.get("BREASTCADX_THREADS")
    if env and env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 1) // max(1, workers_on_host))


def load_models(options, threads: int) -> None:
    """Set the thread count and load every model of the set (cached for the life of the process)."""
    import torch

    from BreastCADxLib.analysis.classifier import get_classifier
    from BreastCADxLib.analysis.guard import get_guard
    from BreastCADxLib.analysis.registry import choose_device
    from BreastCADxLib.analysis.segmentation import get_segmenter

    torch.set_num_threads(threads)
    device = choose_device(options.device).type
    get_guard(options.model_set, device)
    get_classifier(model_set=options.model_set)
    get_segmenter(device=options.device, model_set=options.model_set)


def _plugin(options, workers_on_host: int):
    from distributed.diagnostics.plugin import WorkerPlugin

    class ModelsPlugin(WorkerPlugin):
        """Loads the models when a worker starts (or joins later), so every case finds them in memory."""

        name = f"breastcadx-models-{options.model_set}"

        def setup(self, worker) -> None:  # noqa: ANN001 - distributed.Worker
            load_models(options, worker_threads(workers_on_host))

    return ModelsPlugin()


class WorkerLost(BreastCADxError):
    """The Dask worker running a case was lost every time the case was tried."""

    code = "worker_lost"


def _lost(e: BaseException) -> Exception:
    from distributed import KilledWorker

    if isinstance(e, KilledWorker):
        return WorkerLost("internal error: the worker running this case was lost each time it was tried (killed or "
                          "out of memory); the case was not finished")
    return e


def run_on_dask(todo: list, out: Path, options, finished: Callable[[dict], None], compute: Callable,
                error_record: Callable, workers: int = 0, scheduler: str | None = None) -> None:
    """Run `compute(case, out, options)` (batch.compute) for every pending case on Dask; `finished(record)` once
    per case, as they complete; a case whose worker was lost gets `error_record`'s row."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise BreastCADxError("--workers and --scheduler need Dask: pip install 'breastcadx[cluster]'") from None
    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except (OSError, TimeoutError) as e:
            raise BreastCADxError(f"cannot reach the Dask scheduler at {scheduler} ({e})") from None
        per_host = 1
    else:
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=logging.ERROR)
        client = Client(cluster)
        per_host = workers
    try:
        client.register_plugin(_plugin(options, per_host))
        futures = {client.submit(compute, case, out, options, key=f"breastcadx-{case.case_id}-{os.getpid()}",
                                 pure=False): case for case in todo}
        for future in as_completed(futures):
            case = futures[future]
            try:
                record = future.result()
            except Exception as e:  # the task itself never raises: a lost worker or a broken cluster
                record = error_record(case.case_id, _lost(e), 0.0)
            finished(record)
            future.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
