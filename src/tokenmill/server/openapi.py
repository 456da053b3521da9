"""The OpenAPI document, completed with what is only known once the model has loaded."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from tokenmill.server.state import Phase, ServerState

_MODEL_FIELDS = (
    "ChatCompletionRequest",
    "CompletionRequest",
    "TokenizeRequest",
    "DetokenizeRequest",
)


def install_openapi(app: FastAPI, state: ServerState) -> None:
    """Serves FastAPI's generated document with the served model's name as the only
    allowed `model` value, so clients and schema-driven fuzzers see the real contract.
    The document is cached once the model is ready (before that it lacks the name)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        if state.phase is not Phase.READY:
            return schema
        name = state.model_name
        components = schema.get("components", {}).get("schemas", {})
        for component in _MODEL_FIELDS:
            props = components.get(component, {}).get("properties", {})
            if "model" in props:
                props["model"] = {
                    "anyOf": [{"type": "string", "enum": [name]}, {"type": "null"}],
                    "title": "Model",
                    "description": f"The served model, {name!r}; may be omitted.",
                }
        get_model = schema["paths"].get("/v1/models/{model_id}", {}).get("get", {})
        for param in get_model.get("parameters", []):
            if param.get("name") == "model_id":
                param["schema"] = {"type": "string", "enum": [name], "title": "Model Id"}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi
