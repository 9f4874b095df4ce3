"""Rendering the chart offline with Helm's own library (helm-python-sdk bundles Helm 4 as a
shared library: no helm binary, no cluster, nothing downloaded)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "k8s" / "lipsyncd"
KUBE_VERSION = "1.31.0"  # the Kubernetes schemas the manifests are validated against
NAMESPACE = "lipsyncd"
# What any install must give: the database URL (or an existing Secret).
REQUIRED = {"secrets": {"databaseUrl": "postgresql+psycopg://lipsyncd:pw@postgres.db.svc:5432/lipsyncd"}}
PROFILES = {"default": [], "gpu": ["values-gpu.yaml"], "cpu": ["values-cpu.yaml"]}


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def profile_values(profile: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """The -f files of a profile, then REQUIRED, then `extra` (as `helm install -f ... --set`)."""
    values: dict[str, Any] = {}
    for name in PROFILES[profile]:
        values = deep_merge(values, helm.values_from_yaml((CHART / name).read_text()))
    return deep_merge(deep_merge(values, REQUIRED), extra or {})


def render(values: dict[str, Any], release: str = "lipsyncd", *, tests: bool = True) -> list[dict[str, Any]]:
    """Every manifest the chart renders with `values`, parsed (NOTES.txt left out)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.merge_values(values))
        rendered = chart.render(chart.merge_values(values), name=release, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt") or (not tests and "/tests/" in path):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def find(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].endswith(suffix)]
    assert len(matches) == 1, f"{kind} *{suffix}: {[d['metadata']['name'] for d in matches]}"
    return matches[0]


def pod_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "StatefulSet", "Pod")]
