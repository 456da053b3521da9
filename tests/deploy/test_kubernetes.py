"""deploy/k8s: every manifest valid against the Kubernetes schemas (kubernetes-validate),
the kustomize overlays rendered and checked whole, and the probes, ports, settings and
drain timing matching what `tokenmill serve` exposes."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from tests.deploy.files import K8S, K8S_VERSION, OVERLAYS, by_kind, load_docs, render
from tokenmill.gateway.auth import KeyStore

BASE_FILES = sorted((K8S / "base").glob("*.yaml"))
RAY_SERVICE = K8S / "ray" / "rayservice.yaml"
# uvicorn is given the grace plus this margin to close its connections (cli/serve.py).
UVICORN_MARGIN_S = 5


def rendered_sets() -> list[tuple[str, list[dict]]]:
    return [(p.name, render(p)) for p in [K8S / "base", *OVERLAYS]]


def test_there_are_overlays():
    assert {p.name for p in OVERLAYS} >= {"dev", "production"}


@pytest.mark.parametrize("path", BASE_FILES, ids=lambda p: p.name)
def test_base_manifest_is_schema_valid(path):
    for doc in load_docs(path):
        if doc.get("kind") == "Kustomization":
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("directory", [K8S / "base", *OVERLAYS, K8S / "ray"], ids=str)
def test_rendered_kustomization_is_schema_valid(directory):
    docs = render(directory)
    assert docs
    for doc in docs:
        if doc["kind"] == "RayService":
            continue  # a CRD: kubernetes-validate has no schema (test_rayservice_*)
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_broken_manifest_is_refused():
    """The validator is live: an unknown field fails."""
    deployment = by_kind(load_docs(K8S / "base" / "deployment.yaml"), "Deployment")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def _settings(docs: list[dict]) -> dict[str, str]:
    (config_map,) = [d for d in by_kind(docs, "ConfigMap") if "settings" in d["metadata"]["name"]]
    return config_map["data"]


def _container(docs: list[dict]) -> dict:
    (deployment,) = by_kind(docs, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container


def test_settings_are_declared_and_valid(settings_by_env):
    for name, docs in rendered_sets():
        for env, value in _settings(docs).items():
            setting = settings_by_env.get(env)
            assert setting is not None, f"{name}: {env} is not a tokenmill setting"
            setting.coerce(value, f"{name}: {env}")


def test_probes_and_ports_match_the_server(get_routes, serve_flags):
    for name, docs in rendered_sets():
        container = _container(docs)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == int(_settings(docs)["TOKENMILL_PORT"]), name
        assert _settings(docs)["TOKENMILL_HOST"] == "0.0.0.0", name
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] in get_routes, f"{name}: {probe} asks {get['path']}"
            assert get["port"] in ports, f"{name}: {probe} port {get['port']}"
        assert container["args"][0] == "serve"
        for arg in container["args"][1:]:
            if arg.startswith("--"):
                assert arg.split("=")[0] in serve_flags, f"{name}: {arg}"
        (service,) = by_kind(docs, "Service")
        assert all(p["targetPort"] in ports for p in service["spec"]["ports"])


def test_termination_grace_covers_prestop_and_drain():
    for name, docs in rendered_sets():
        container = _container(docs)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        assert command[0] == "sleep"
        grace = float(_settings(docs)["TOKENMILL_SHUTDOWN_GRACE"])
        needed = float(command[1]) + grace + UVICORN_MARGIN_S
        (deployment,) = by_kind(docs, "Deployment")
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > needed


def test_compute_threads_leave_room_within_the_cpu_limit():
    for name, docs in rendered_sets():
        limit = float(_container(docs)["resources"]["limits"]["cpu"])
        assert int(_settings(docs)["TOKENMILL_NUM_THREADS"]) < limit, name


def test_selectors_find_the_deployments_pods():
    for name, docs in rendered_sets():
        (deployment,) = by_kind(docs, "Deployment")
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        selectors = [s["spec"]["selector"] for s in by_kind(docs, "Service")]
        selectors += [
            p["spec"]["selector"]["matchLabels"] for p in by_kind(docs, "PodDisruptionBudget")
        ]
        assert selectors, name
        for selector in selectors:
            assert selector.items() <= labels.items(), f"{name}: {selector}"
        for hpa in by_kind(docs, "HorizontalPodAutoscaler"):
            assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_keys_secret_is_a_keys_file_tokenmill_loads(tmp_path):
    docs = render(K8S / "base")
    (secret,) = by_kind(docs, "Secret")
    keys_path = _settings(docs)["TOKENMILL_KEYS"]
    mounts = {m["name"]: m["mountPath"] for m in _container(docs)["volumeMounts"]}
    (deployment,) = by_kind(docs, "Deployment")
    volume = next(
        v
        for v in deployment["spec"]["template"]["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    )
    mount = mounts[volume["name"]]
    assert keys_path.startswith(mount + "/")
    file_name = keys_path.removeprefix(mount + "/")
    keys_file = tmp_path / file_name
    keys_file.write_text(secret["stringData"][file_name])
    assert KeyStore.from_settings((), str(keys_file)).enabled


def test_rayservice_is_shaped_for_kuberay(settings_by_env):
    (ray,) = load_docs(RAY_SERVICE)
    assert (ray["apiVersion"], ray["kind"]) == ("ray.io/v1", "RayService")
    cluster = ray["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    serve = yaml.safe_load(ray["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    known = {s.name for s in settings_by_env.values()}
    assert set(app["args"]) <= known
    for env, value in app["runtime_env"]["env_vars"].items():
        settings_by_env[env].coerce(value, env)
    # The builder the import path names makes a valid config of these args and variables.
    module, builder = app["import_path"].split(":")
    assert (module, builder) == ("tokenmill.ray.app", "build")
    from tokenmill.ray.app import config_from_mapping

    config = config_from_mapping(app["args"], app["runtime_env"]["env_vars"])
    assert config.ray.autoscaling and config.gateway.redis_url


def test_rayservice_pod_templates_are_schema_valid():
    """kubernetes-validate has no KubeRay schema, but the head and worker pods are core
    pod templates: each is checked as a v1 PodTemplate."""
    (ray,) = load_docs(RAY_SERVICE)
    cluster = ray["spec"]["rayClusterConfig"]
    groups = [("head", cluster["headGroupSpec"])]
    groups += [(g["groupName"], g) for g in cluster["workerGroupSpecs"]]
    for name, group in groups:
        assert all(isinstance(v, str) for v in group["rayStartParams"].values()), name
        template = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": f"ray-{name}"},
            "template": group["template"],
        }
        kubernetes_validate.validate(template, K8S_VERSION, strict=True)
