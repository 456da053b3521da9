"""GET /v1/models under --models: a card per served name and per NAME@VERSION."""

from __future__ import annotations

import dataclasses

from tokenmill.errors import ModelNotFoundError
from tokenmill.gateway.registry import Deployment, Registry
from tokenmill.protocol.misc import ModelCard, PrecisionInfo


def version_card(d: Deployment) -> ModelCard:
    info = d.model.info if d.model is not None else {}
    precision = info.get("precision")
    return ModelCard(
        id=d.key,
        created=d.created,
        max_model_len=info.get("max_model_len"),
        precision=PrecisionInfo(**dataclasses.asdict(precision)) if precision else None,
        task=d.spec.task,
        version=d.spec.version,
        status=d.status,
        traffic=d.spec.traffic,
        shadow=d.spec.shadow,
        shadow_compare=d.shadow_stats.summary() if d.spec.shadow else None,
        error=d.error,
    )


def _name_card(registry: Registry, name: str) -> ModelCard:
    versions = registry.versions(name)
    stable = registry.stable(name)
    return ModelCard(
        id=name,
        created=min(d.created for d in versions),
        task=versions[0].spec.task,
        versions=[d.spec.version for d in versions],
        status="ready" if any(d.live for d in versions) else versions[-1].status,
        version=stable.spec.version if stable else None,
        max_model_len=stable.model.info.get("max_model_len") if stable and stable.model else None,
    )


def registry_cards(registry: Registry) -> list[ModelCard]:
    """Each name's card followed by its versions' cards; reads, never mutates."""
    cards = []
    for name in registry.names():
        cards.append(_name_card(registry, name))
        cards.extend(version_card(d) for d in registry.versions(name))
    return cards


def registry_card(registry: Registry, model_id: str) -> ModelCard:
    """The card of NAME or NAME@VERSION (aliases too); 404 for an unknown one."""
    name, _, version = model_id.partition("@")
    if name not in registry.names():
        raise ModelNotFoundError(f"No served model is called {name!r} (see GET /v1/models).")
    if not version:
        return _name_card(registry, name)
    return version_card(registry.get(model_id))
