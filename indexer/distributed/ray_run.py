"""Drive the cluster: the files to embed as a Ray dataset, mapped by a pool of model actors,
the results streamed back batch by batch for the driver to commit."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from indexer.distributed.worker import Embedded, EmbedFiles, WorkerModel, unpack
from indexer.errors import PhotoseekError
from indexer.models.loading import ModelSpec

log = logging.getLogger(__name__)

EXTRA = "pip install 'photoseek[ray]'"
# A CPU actor's share of a node: torch and ONNX Runtime use a few threads well, not dozens.
CPUS_PER_ACTOR = 4


class RayUnavailable(PhotoseekError):
    """`--ray` cannot work: Ray Data is not installed, the cluster cannot be reached, or its
    actors cannot load the model."""


@dataclass(frozen=True)
class RaySettings:
    """Where and how the cluster embeds: the driver's own model, precision and input size."""

    address: str  # "local" (start one), "auto" (the one `ray start` runs here), or an address
    spec: ModelSpec  # as the driver resolved it: checkpoint paths every node can read
    precision: str
    device: str | None
    image_size: int


def require_ray() -> ModuleType:
    """The `ray` module with Ray Data, or a one-line error naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401 - the part `--ray` needs; `ray` alone lacks it
    except ImportError:
        raise RayUnavailable(f"--ray needs Ray Data: {EXTRA}") from None
    return ray


def embed_on_ray(
    paths: list[bytes], settings: RaySettings, batch_size: int
) -> Iterator[tuple[WorkerModel, list[Embedded]]]:
    """Each batch of `paths` decoded and embedded on the cluster, in the order they finish;
    `Embedded.index` says which path each result is for."""
    if not paths:
        return
    ray = require_ray()
    with _connected(ray, settings.address), _quiet(ray):
        items = [{"index": i, "path": path} for i, path in enumerate(paths)]
        mapped = ray.data.from_items(items).map_batches(
            EmbedFiles,
            fn_constructor_kwargs={
                "spec": settings.spec,
                "precision": settings.precision,
                "device": settings.device,
                "image_size": settings.image_size,
            },
            batch_size=batch_size,
            batch_format="numpy",
            # No actor may download weights: they load the files the driver named.
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
            **_actor_pool(ray),
        )
        try:
            for batch in mapped.iter_batches(batch_size=None, batch_format="numpy"):
                yield unpack(batch)
        except ray.exceptions.RayActorError as e:
            if not e.actor_init_failed:
                raise
            # Ray keeps only the text of the actor's error: its traceback, the error last.
            reason = str(e).strip().splitlines()[-1].strip()
            raise RayUnavailable(f"a Ray actor could not load the model: {reason}") from None


def _actor_pool(ray: Any) -> dict[str, Any]:
    """One actor per GPU where the cluster has GPUs, else one per CPUS_PER_ACTOR cores (or
    per node, on nodes with fewer)."""
    gpus = int(ray.cluster_resources().get("GPU", 0))
    if gpus:
        size, per_actor = gpus, {"num_gpus": 1, "num_cpus": 1}
    else:
        cpus = [int(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]]
        share = max(1, min([CPUS_PER_ACTOR, *(c for c in cpus if c)]))
        size, per_actor = max(1, sum(c // share for c in cpus)), {"num_cpus": share}
    log.info("embedding on %d Ray actors (%s each)", size, per_actor)
    return {"compute": ray.data.ActorPoolStrategy(min_size=1, max_size=size), **per_actor}


@contextmanager
def _quiet(ray: Any) -> Iterator[None]:
    """Ray Data without its progress bars and notes on stderr (the caller reports progress;
    warnings still show), for this run only: its context and loggers are left as they were."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = context.print_on_execution_start = False
    data_log, bars_log = (logging.getLogger(f"ray.data{n}") for n in ("", "._internal.progress"))
    level = data_log.level
    data_log.setLevel(logging.WARNING)
    silence = logging.Filter("silence")  # passes only the records of a logger named so
    bars_log.addFilter(silence)  # its one warning: that the bars are off
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_log.setLevel(level)
        bars_log.removeFilter(silence)


@contextmanager
def _connected(ray: Any, address: str) -> Iterator[None]:
    """Ray connected for the block: to `address`, unless the caller connected it already
    (then left as it was found)."""
    if ray.is_initialized():
        yield
        return
    extra = {"include_dashboard": False} if address == "local" else {}
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, **extra)
    except (ConnectionError, ValueError) as e:
        raise RayUnavailable(f"cannot reach the Ray cluster at {address}: {e}") from None
    try:
        yield
    finally:
        ray.shutdown()
