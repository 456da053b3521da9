"""The deployer: puts ModelSpecs into the registry and takes them out, safely.

It loads versions (in the background for the admin API), keeps loading within the
memory budget, drains a version before unloading it, and saves every change to the
state file so a restart serves what was served. The registry it fills routes calls.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

from tokenmill.errors import TokenmillError
from tokenmill.gateway.models_file import ModelSpec
from tokenmill.gateway.registry import Deployment, LoadedModel, Registry

logger = logging.getLogger(__name__)

Loader = Callable[[ModelSpec], Awaitable[LoadedModel]]


class ConflictError(TokenmillError):
    """The change cannot be made in the registry's present state (HTTP 409)."""

    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class Deployer:
    """Owns the registry's deployments' lifecycles. Methods run on the event loop."""

    def __init__(
        self,
        loader: Loader,
        estimate: Callable[[ModelSpec], int] | None = None,
        memory_budget_bytes: int | None = None,
        drain_timeout_s: float = 600.0,
        initial: list[ModelSpec] | None = None,
        adopt_engine: Callable[[object], LoadedModel] | None = None,
    ):
        self.registry = Registry()
        self.initial = list(initial or [])
        """The models file's specs; the first is the engine the server loaded itself."""
        self._adopt_engine = adopt_engine
        self._loader = loader
        self._estimate = estimate or (lambda spec: 0)
        self.memory_budget_bytes = memory_budget_bytes
        self.drain_timeout_s = drain_timeout_s
        self._tasks: set[asyncio.Task] = set()

    # -- loading ---------------------------------------------------------------------------

    async def start(self, engine) -> None:
        """Adopts the server's engine as the first spec, then loads the others one by one
        (in the file's order). Raises the first load's error: the server fails to start
        rather than serve part of its models file."""
        first, *rest = self.initial
        assert self._adopt_engine is not None
        self.adopt(first, self._adopt_engine(engine))
        for spec in rest:
            await self.load(spec)

    def adopt(self, spec: ModelSpec, model: LoadedModel) -> Deployment:
        """Registers a model loaded elsewhere (the server's first engine) as ready."""
        deployment = Deployment(spec, status="ready", model=model)
        self.registry.add(deployment)
        return deployment

    async def load(self, spec: ModelSpec) -> Deployment:
        """Loads `spec` and waits until it is ready. Raises ConflictError (409) when it
        exists already or would exceed the memory budget, or the loader's error (the
        deployment is then kept as failed, its error on its card)."""
        deployment = self.begin_load(spec)
        await self._finish(deployment)
        if deployment.status == "failed":
            raise TokenmillError(f"{spec.key} failed to load: {deployment.error}")
        return deployment

    def begin_load(self, spec: ModelSpec) -> Deployment:
        """Registers `spec` as loading and loads it in the background. Raises
        ConflictError at once (nothing registered) for a duplicate or an over-budget
        load, and for a task other than its name's."""
        existing = self.registry.versions(spec.name)
        if any(d.spec.version == spec.version and d.status != "failed" for d in existing):
            raise ConflictError(f"{spec.key} exists already; unload it first or pick a version.")
        if existing and existing[0].spec.task != spec.task:
            raise ConflictError(
                f"{spec.name!r} serves the {existing[0].spec.task!r} task; {spec.key} would "
                f"serve {spec.task!r}. Use another name."
            )
        self._check_budget(spec)
        for stale in existing:
            if stale.spec.version == spec.version:
                self.registry.remove(stale)
        deployment = Deployment(spec)
        self.registry.add(deployment)
        task = asyncio.ensure_future(self._finish(deployment))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        deployment.loading_task = task
        return deployment

    async def _finish(self, deployment: Deployment) -> None:
        task = deployment.loading_task
        if task is not None and task is not asyncio.current_task():
            await asyncio.shield(task)
            return
        try:
            deployment.model = await self._loader(deployment.spec)
        except Exception as exc:  # noqa: BLE001 - reported on the card and in the log
            logger.error("could not load %s: %s", deployment.key, exc)
            deployment.status = "failed"
            deployment.error = str(exc)
            return
        deployment.status = "ready"
        logger.info("%s ready (%.0f MiB)", deployment.key, deployment.model.weight_bytes / 2**20)

    def loaded_bytes(self) -> int:
        return sum(
            d.model.weight_bytes if d.model else self._estimate(d.spec)
            for d in self.registry.deployments()
            if d.status in ("ready", "loading", "draining")
        )

    def _check_budget(self, spec: ModelSpec) -> None:
        budget = self.memory_budget_bytes
        if budget is None:
            return
        need = self._estimate(spec)
        used = self.loaded_bytes()
        if used + need <= budget:
            return
        loaded = ", ".join(
            f"{d.key} {(d.model.weight_bytes if d.model else self._estimate(d.spec)) / 2**30:.2f}"
            " GiB"
            for d in self.registry.deployments()
            if d.status in ("ready", "loading", "draining")
        )
        raise ConflictError(
            f"Loading {spec.key} needs about {need / 2**30:.2f} GiB, but {used / 2**30:.2f} of "
            f"the {budget / 2**30:.2f} GiB memory budget are taken ({loaded or 'nothing'}). "
            "Unload a version first (DELETE /admin/models/NAME@VERSION) or raise "
            "--memory-budget-gib.",
            code="memory_budget_exceeded",
        )

    # -- unloading -------------------------------------------------------------------------

    async def unload(self, deployment: Deployment) -> None:
        """Stops routing to it, waits for its in-flight calls (at most drain_timeout_s),
        then frees it and removes it from the registry."""
        deployment.status = "draining"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_timeout_s
        while deployment.inflight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        if deployment.model is not None:
            await _maybe_await(deployment.model.close())
        self.registry.remove(deployment)
        logger.info("%s unloaded", deployment.key)

    async def close(self) -> None:
        """Unloads everything (server shutdown); the loads still running are cancelled."""
        for task in list(self._tasks):
            task.cancel()
        for deployment in self.registry.deployments():
            if deployment.model is not None:
                try:
                    await _maybe_await(deployment.model.close())
                except Exception:
                    logger.exception("closing %s failed", deployment.key)


async def _maybe_await(value) -> None:
    if inspect.isawaitable(value):
        await value
