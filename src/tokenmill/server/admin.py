"""The admin API over the model registry (--models): load, shift traffic, promote,
roll back, unload.

Who may call it: with API keys configured, only admin keys (`--api-key` keys, or
`admin = true` in the keys file); other keys get 403. With no keys configured, nobody,
unless the server was started with --admin-open (meant for a trusted loopback host):
an open server must not let any client unload its models.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from tokenmill.errors import ConfigError, InvalidRequestError, ServiceUnavailableError
from tokenmill.gateway.auth import PermissionDeniedError
from tokenmill.gateway.deployer import ConflictError
from tokenmill.gateway.models_file import ModelSpec
from tokenmill.protocol.common import OpenAIModel
from tokenmill.server.serving.models import registry_cards, version_card
from tokenmill.server.state import ServerState

_unloads: set[asyncio.Task] = set()


class LoadRequest(OpenAIModel):
    """POST /admin/models: one models-file entry."""

    name: str
    version: str
    source: str | None = None
    task: str = "generate"
    dtype: str = "auto"
    quantization: str | None = None
    traffic: float = Field(0.0, ge=0, le=100)
    shadow: bool = False


class PatchRequest(OpenAIModel):
    """PATCH /admin/models/NAME@VERSION."""

    traffic: float | None = Field(None, ge=0, le=100)
    shadow: bool | None = None


def install_admin(app: FastAPI, state: ServerState, admin_open: bool) -> None:
    """Adds the /admin routes (they answer 404 without --models)."""

    def deployer(raw: Request):
        caller = raw.scope.get("tokenmill.caller")
        if caller is None and not admin_open:
            raise PermissionDeniedError(
                "The admin API needs an admin key; this server has no keys configured. Start "
                "it with --api-key (or an admin key in --keys), or with --admin-open on a "
                "trusted host.",
                code="admin_required",
            )
        if caller is not None and not caller.admin:
            raise PermissionDeniedError(
                f"The key {caller.name!r} is not an admin key.", code="admin_required"
            )
        if state.deployer is None:
            raise PermissionDeniedError(
                "This server serves one model (--model); start it with --models FILE to "
                "manage versions.",
                code="no_registry",
            )
        state.engine  # noqa: B018 - 503 while the server loads or drains
        return state.deployer

    def changer(raw: Request):
        """deployer(raw), for a route that changes the registry: 409 where it is frozen."""
        dep = deployer(raw)
        if dep.frozen is not None:
            raise ConflictError(dep.frozen, code="registry_frozen")
        return dep

    def card(d) -> dict:
        body = version_card(d).model_dump(exclude_none=True)
        body.update(inflight=d.inflight, served=d.served)
        return body

    @app.get("/admin/models", tags=["admin"])
    async def list_versions(raw: Request) -> dict:
        """Every version with its in-flight and served counts."""
        dep = deployer(raw)
        return {"data": [card(d) for d in dep.registry.deployments()]}

    @app.post("/admin/models", status_code=202, tags=["admin"])
    async def load_version(body: LoadRequest, raw: Request) -> JSONResponse:
        """Loads a version in the background (202; its card says `loading`, then
        `ready` or `failed`); it takes its traffic share once ready. 409 when it exists
        or would pass --memory-budget-gib."""
        dep = changer(raw)
        try:
            spec = ModelSpec.from_table(body.model_dump(), "the request")
        except ConfigError as exc:
            raise InvalidRequestError(exc.message) from None
        return JSONResponse(card(dep.begin_load(spec, rebalance=True)), status_code=202)

    @app.patch("/admin/models/{key}", tags=["admin"])
    async def patch_version(key: str, body: PatchRequest, raw: Request) -> dict:
        """Changes a version's traffic share (siblings rescaled to fill) or shadow flag."""
        dep = changer(raw)
        deployment = dep.registry.get(key)
        dep.set_traffic(deployment, body.traffic, body.shadow)
        return {"data": [card(d) for d in dep.registry.versions(deployment.spec.name)]}

    @app.post("/admin/models/{name}/promote", tags=["admin"])
    async def promote(name: str, raw: Request) -> dict:
        """The canary takes all traffic; the old stable stays loaded for rollback."""
        dep = changer(raw)
        dep.promote(name)
        return {"data": [card(d) for d in dep.registry.versions(name)]}

    @app.post("/admin/models/{name}/rollback", tags=["admin"])
    async def rollback(name: str, raw: Request) -> dict:
        """The version before the last promote takes all traffic back."""
        dep = changer(raw)
        dep.rollback(name)
        return {"data": [card(d) for d in dep.registry.versions(name)]}

    @app.delete("/admin/models/{key}", status_code=202, tags=["admin"])
    async def unload(key: str, raw: Request, wait: bool = False) -> JSONResponse:
        """Stops routing to the version, drains its in-flight calls, then unloads it
        (in the background; `?wait=true` answers once it is gone)."""
        dep = changer(raw)
        deployment = dep.registry.get(key)
        if deployment.status == "draining":
            raise ServiceUnavailableError(f"{key} is draining already.", code="model_draining")
        dep.begin_unload(deployment)
        task = asyncio.ensure_future(dep.finish_unload(deployment))
        if wait:
            await task
            return JSONResponse({"id": deployment.key, "status": "unloaded"}, status_code=200)
        _unloads.add(task)
        task.add_done_callback(_unloads.discard)
        return JSONResponse(card(deployment), status_code=202)


__all__ = ["install_admin", "registry_cards"]
