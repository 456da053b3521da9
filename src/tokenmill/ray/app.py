"""The Ray Serve application: one deployment per served model behind one ingress.

`build(args)` is the import path a RayService names (tokenmill.ray.app:build): its
args are setting names (min_replicas, ...), every other setting a TOKENMILL_* variable.
`run(config)` is `tokenmill serve --ray`: it joins --ray-address or starts a local head,
deploys, and serves until SIGTERM or Ctrl-C, then shuts Serve (and a local head) down.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Mapping

from tokenmill.config import AppConfig
from tokenmill.config.setting import build as build_config
from tokenmill.config.setting import resolve, settings_of

logger = logging.getLogger("tokenmill.ray")

APP_NAME = "tokenmill"
ROUTER_CLASS = "tokenmill.ray.router.PrefixAffinityRouter"


def deployment_name(model: str) -> str:
    """A Serve deployment name for a served model name."""
    return "model-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in model)


REGISTRY_DEPLOYMENT = "registry"
"""The one deployment that serves a --models file: each replica runs the whole registry."""


def served_models(config: AppConfig) -> list[str]:
    """The served model names: --model's, or every name in the --models file (whose
    versions, traffic splits, shadows and task models each replica serves in full)."""
    if config.registry.models:
        from tokenmill.gateway import model_loader
        from tokenmill.gateway.models_file import read_models_file

        specs = read_models_file(config.registry.models)
        for spec in specs:
            model_loader.estimate_bytes(spec)  # an unknown source fails before Ray starts
        return list(dict.fromkeys(spec.name for spec in specs))
    from tokenmill.model.registry import resolve_model

    model = config.engine.model
    return [model.served_model_name or resolve_model(model.model).name]


def _deployment_names(config: AppConfig) -> dict[str, str]:
    """Served model name -> its Serve deployment: one per model with --model; with
    --models one deployment for the whole file (a version's canary split and shadow
    must be decided where all the versions are)."""
    names = served_models(config)
    if config.registry.models:
        return dict.fromkeys(names, REGISTRY_DEPLOYMENT)
    return {name: deployment_name(name) for name in names}


def build_application(config: AppConfig):
    """The Serve application for `config`: an ingress and a model deployment each
    with its replicas (or autoscaling) and the prefix-affinity request router."""
    from ray import serve
    from ray.serve.config import RequestRouterConfig

    from tokenmill.ray.ingress import Ingress
    from tokenmill.ray.replica import ModelReplica

    rc = config.ray
    handles, bound = {}, {}
    for name, deployment_id in _deployment_names(config).items():
        if deployment_id in bound:
            handles[name] = bound[deployment_id]
            continue
        deployment = serve.deployment(
            ModelReplica,
            name=deployment_id,
            ray_actor_options={"num_cpus": rc.ray_replica_cpus},
            max_ongoing_requests=max(4, 2 * config.engine.scheduler.max_num_seqs),
            health_check_period_s=5,
            health_check_timeout_s=30,
            graceful_shutdown_timeout_s=config.server.shutdown_grace + 5,
            request_router_config=RequestRouterConfig(
                request_router_class=ROUTER_CLASS,
                request_router_kwargs={"imbalance": rc.ray_imbalance},
            ),
            **rc.deployment_options(),
        )
        handles[name] = bound[deployment_id] = deployment.bind(config)
    ingress = serve.deployment(
        Ingress, name="ingress", ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1024
    )
    return ingress.bind(handles, rc.ray_prefix_chars, rc.ray_max_retries)


def config_from_mapping(args: Mapping[str, object], env: Mapping[str, str]) -> AppConfig:
    """AppConfig from a RayService's args (setting names; they win) and TOKENMILL_*."""
    settings = settings_of(AppConfig)
    flags = {k.replace("-", "_"): (None if v is None else v) for k, v in args.items()}
    return build_config(AppConfig, resolve(settings, flags, env, {}))


def build(args: dict | None = None):
    """The application builder a RayService's import_path names."""
    return build_application(config_from_mapping(args or {}, os.environ))


def run(config: AppConfig) -> int:
    """`tokenmill serve --ray`: deploys and serves until SIGTERM/SIGINT; returns 0 after
    Serve shut down, 1 if the deployment failed."""
    import ray
    from ray import serve

    served_models(config)  # fails before Ray starts
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    local = config.ray.ray_address is None
    if local:
        ray.init(include_dashboard=False, configure_logging=False)
    else:
        ray.init(address=config.ray.ray_address, configure_logging=False)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": config.server.host, "port": config.server.port})
        serve.run(build_application(config), name=APP_NAME, route_prefix="/")
        print(
            f"tokenmill: serving {', '.join(served_models(config))} with Ray Serve at "
            f"{config.server.base_url} ({_replicas_text(config)}; Ctrl-C to stop)",
            flush=True,
        )
        stop.wait()
        logger.info("shutting Ray Serve down")
        return 0
    except Exception as exc:  # a replica failing to start surfaces here
        logger.debug("deployment failed", exc_info=True)
        print(f"tokenmill: error: Ray Serve deployment failed: {exc}", flush=True)
        return 1
    finally:
        serve.shutdown()
        ray.shutdown()


def _replicas_text(config: AppConfig) -> str:
    opts = config.ray.deployment_options()
    if "num_replicas" in opts:
        return f"{opts['num_replicas']} replica(s) per model"
    auto = opts["autoscaling_config"]
    return f"autoscaling {auto['min_replicas']}-{auto['max_replicas']} replicas per model"
