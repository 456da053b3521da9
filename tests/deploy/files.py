"""The deploy files as data: paths, YAML documents and rendered kustomize output."""

from __future__ import annotations

import copy
import functools
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
# The Kubernetes version whose schemas the manifests are checked against.
K8S_VERSION = "1.32.0"


def load_docs(path: Path) -> list[dict]:
    """The YAML documents of one file (empty ones skipped)."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def render(kustomization_dir: Path) -> list[dict]:
    """`kubectl kustomize DIR` as documents (a fresh copy each call); skips when kubectl
    is not installed."""
    return copy.deepcopy(_render(kustomization_dir))


@functools.cache
def _render(kustomization_dir: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: rendered kustomize output not checked")
    out = subprocess.run(
        [kubectl, "kustomize", str(kustomization_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]
