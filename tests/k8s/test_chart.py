"""`make k8s-check`, part 1: the chart renders with the default, GPU and CPU-only values,
passes `helm lint --strict`, every manifest validates against the Kubernetes 1.31 schemas,
and the rendered objects keep the properties the deployment needs."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.k8s.chart import (
    CHART,
    KUBE_VERSION,
    PROFILES,
    REQUIRED,
    find,
    pod_spec,
    profile_values,
    render,
    workloads,
)

# Custom resources the Kubernetes schemas do not cover: checked by hand below.
CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "ScaledObject": "keda.sh/v1alpha1"}
EVERYTHING_ON = {
    "ingress": {"enabled": True, "tlsSecret": "lipsync-tls", "className": "nginx"},
    "metrics": {"serviceMonitor": {"enabled": True}},
    "orchestrator": {"keda": {"enabled": True}},
    "networkPolicy": {"ingressFrom": [{"kubernetes.io/metadata.name": "ingress-nginx"}]},
}


@pytest.mark.parametrize("profile", PROFILES)
def test_lint_strict_finds_nothing(profile: str) -> None:
    report = helm.lint(CHART, profile_values(profile), strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not report["errors"] and not problems, report


@pytest.mark.parametrize("extra", [{}, EVERYTHING_ON], ids=["plain", "everything-on"])
@pytest.mark.parametrize("profile", PROFILES)
def test_every_manifest_validates_against_the_kubernetes_schemas(profile: str, extra: dict[str, Any]) -> None:
    docs = render(profile_values(profile, extra))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "StatefulSet", "Service", "Secret", "PodDisruptionBudget", "NetworkPolicy",
            "HorizontalPodAutoscaler", "ServiceAccount", "PersistentVolumeClaim", "Pod"} <= kinds | (
        {"HorizontalPodAutoscaler"} if extra else set())
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == CRD_KINDS[doc["kind"]]
            continue
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/instance"] == "lipsyncd"


@pytest.mark.parametrize("profile", PROFILES)
def test_pods_run_as_non_root_on_a_read_only_root_with_writable_volumes(profile: str) -> None:
    for doc in workloads(render(profile_values(profile))):
        spec = pod_spec(doc)
        assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
        volumes = {v["name"] for v in spec.get("volumes", [])} | {
            c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes
            assert "ephemeral-storage" in container["resources"]["requests"] or doc["kind"] == "StatefulSet"


def test_image_tags_default_to_the_app_version() -> None:
    docs = render(profile_values("default"))
    app_version = helm.Chart.load(CHART).metadata["appVersion"]
    images = {c["image"] for d in workloads(docs) for c in pod_spec(d)["containers"]}
    assert f"ghcr.io/example/lipsyncd:{app_version}" in images
    assert f"ghcr.io/example/lipsyncd-triton:{app_version}" in images
    pinned = render(profile_values("default", {"image": {"tag": "1.2.3"}}))
    gateway = find(pinned, "Deployment", "-gateway")
    assert pod_spec(gateway)["containers"][0]["image"] == "ghcr.io/example/lipsyncd:1.2.3"


def test_secret_is_created_with_the_documented_keys_or_taken_from_existing_secret() -> None:
    docs = render(profile_values("default"))
    secret = find(docs, "Secret", "-secrets")
    assert set(secret["data"]) == {"secret-key", "database-url", "nats-gateway-user", "nats-gateway-password",
                                   "nats-orchestrator-user", "nats-orchestrator-password"}
    referenced = {(ref["name"], ref["key"]) for d in workloads(docs) for c in pod_spec(d)["containers"]
                  for e in c.get("env", []) if (ref := e.get("valueFrom", {}).get("secretKeyRef"))}
    assert referenced == {(secret["metadata"]["name"], key) for key in secret["data"]}
    existing = render(profile_values("default", {"secrets": {"existingSecret": "mine", "databaseUrl": ""}}))
    assert not [d for d in existing if d["kind"] == "Secret"]
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for d in workloads(existing) for c in pod_spec(d)["containers"]
            for e in c.get("env", []) if "valueFrom" in e}
    assert refs == {"mine"}


def test_a_database_url_is_required() -> None:
    with pytest.raises(helm.HelmError, match="secrets.databaseUrl is required"):
        render({})


@pytest.mark.parametrize("release", ["lipsyncd", "nats", "my-nats-prod", "lipsyncd-nats"])
def test_the_app_points_at_the_nats_service_whatever_the_release_is_called(release: str) -> None:
    docs = render(profile_values("default"), release=release)
    service = find(docs, "Service", "-nats")["metadata"]["name"]
    gateway = pod_spec(find(docs, "Deployment", "-gateway"))["containers"][0]
    url = next(e["value"] for e in gateway["env"] if e["name"] == "LIPSYNCD_NATS_URL")
    assert url == f"nats://{service}.lipsyncd.svc:4222"


def test_external_nats_gets_the_credentials_and_no_in_chart_server() -> None:
    docs = render(profile_values("default", {"nats": {"enabled": False, "url": "nats://nats.infra:4222",
                                                        "streamReplicas": 3}}))
    assert not [d for d in docs if d["metadata"]["name"].endswith("-nats")]
    env = {e["name"]: e.get("value") for e in pod_spec(find(docs, "Deployment", "-orchestrator"))["containers"][0]["env"]}
    assert env["LIPSYNCD_NATS_URL"] == "nats://nats.infra:4222"
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"]
            for e in pod_spec(find(docs, "Deployment", "-orchestrator"))["containers"][0]["env"] if "valueFrom" in e}
    assert refs["LIPSYNCD_NATS_USER"] == "nats-orchestrator-user"
    assert refs["LIPSYNCD_NATS_PASSWORD"] == "nats-orchestrator-password"
    assert env["LIPSYNCD_STREAM_REPLICAS"] == "3"
    with pytest.raises(helm.HelmError, match="nats.url is required"):
        render(profile_values("default", {"nats": {"enabled": False}}))


def test_triton_gets_shm_probes_a_headless_service_and_the_profile_kind() -> None:
    for profile, kind, gpu in (("default", "KIND_CPU", False), ("cpu", "KIND_CPU", False), ("gpu", "KIND_GPU", True)):
        docs = render(profile_values(profile))
        triton = find(docs, "StatefulSet", "-triton")
        spec = pod_spec(triton)
        container = spec["containers"][0]
        assert container["command"][container["command"].index("--kind") + 1] == kind
        shm = next(v for v in spec["volumes"] if v["name"] == "shm")
        assert shm["emptyDir"]["medium"] == "Memory"
        assert {"mountPath": "/dev/shm", "name": "shm"} in container["volumeMounts"]
        assert container["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
        assert ("nvidia.com/gpu" in container["resources"]["limits"]) is gpu
        providers = next(e["value"] for e in container["env"] if e["name"] == "LIPSYNCD_ORT_PROVIDERS")
        assert providers.startswith("TensorrtExecutionProvider") is gpu
        assert any(e["name"] == "LIPSYNCD_TRT_CACHE_DIR" for e in container["env"]) is gpu
        assert bool(spec.get("tolerations")) is gpu
        assert find(docs, "Service", "-triton")["spec"]["clusterIP"] == "None"


def test_orchestrator_scales_on_consumer_lag_with_keda_and_never_below_its_replicas() -> None:
    docs = render(profile_values("default", {"orchestrator": {"replicas": 4, "autoscaling": {"minReplicas": 1}}}))
    hpa = find(docs, "HorizontalPodAutoscaler", "-orchestrator")
    assert hpa["spec"]["minReplicas"] == 4
    deployment = find(docs, "Deployment", "-orchestrator")
    assert "replicas" not in deployment["spec"]  # the autoscaler owns it
    env = {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0]["env"]}
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == int(env["LIPSYNCD_DRAIN_GRACE_S"]) + 30
    keda = render(profile_values("default", {"orchestrator": {"keda": {"enabled": True}}}))
    scaled = find(keda, "ScaledObject", "-orchestrator")
    trigger = scaled["spec"]["triggers"][0]
    assert trigger["type"] == "nats-jetstream"
    assert trigger["metadata"]["stream"] == "LIPSYNCD_JOBS" and trigger["metadata"]["consumer"] == "orchestrator"
    assert not [d for d in keda if d["kind"] == "HorizontalPodAutoscaler" and d["metadata"]["name"].endswith("-orchestrator")]


def test_network_policies_leave_only_the_gateway_reachable() -> None:
    docs = render(profile_values("default"))
    policies = {d["metadata"]["name"].rsplit("-", 1)[1]: d for d in docs if d["kind"] == "NetworkPolicy"}
    assert set(policies) == {"gateway", "triton", "nats"}
    for name in ("triton", "nats"):
        for rule in policies[name]["spec"]["ingress"]:
            assert all("podSelector" in peer for peer in rule["from"])  # release pods only
    assert any("from" not in rule for rule in policies["gateway"]["spec"]["ingress"])


def test_ingress_carries_the_upload_size() -> None:
    docs = render(profile_values("default", EVERYTHING_ON))
    ingress = find(docs, "Ingress", "-gateway")
    # Three files of the default 200 MiB (the dashboard's playground: a face and two voices)
    # and 1 MiB of framing.
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"] == "601m"
    gateway = pod_spec(find(docs, "Deployment", "-gateway"))["containers"][0]
    assert {"name": "LIPSYNCD_MAX_UPLOAD_BYTES", "value": str(200 * 1024 * 1024)} in gateway["env"]
    assert {d["kind"] for d in docs} >= {"ServiceMonitor", "ScaledObject", "Ingress"}


def test_schema_refuses_wrong_values() -> None:
    with helm.Chart.load(CHART) as chart:
        for bad in ({"triton": {"instanceKind": "GPU"}}, {"nats": {"streamReplicas": 2}},
                    {"gateway": {"replicas": "two"}}, {"triton": {"ortProviders": "cuda"}}, {"typo": 1}):
            with pytest.raises(helm.HelmValuesError):
                chart.validate_schema(chart.merge_values({**REQUIRED, **bad}))


def test_every_value_is_used_by_a_template() -> None:
    """No dead values: each leaf of values.yaml is read by a template (by its path, or by a
    parent handed whole to toYaml)."""
    with helm.Chart.load(CHART) as chart:
        values = chart.values
        sources = "\n".join(t["data"] for t in chart.templates)

    def leaves(node: dict[str, Any], path: str) -> list[str]:
        out: list[str] = []
        for key, value in node.items():
            here = f"{path}.{key}"
            out.extend(leaves(value, here) if isinstance(value, dict) and value else [here])
        return out

    def used(path: str) -> bool:
        # The leaf itself, or a parent used whole (toYaml, with, range): not followed by ".".
        parts = path.split(".")
        for i in range(len(parts), 2, -1):
            prefix = ".".join(parts[:i])
            pattern = re.escape(prefix) + (r"(?![\w])" if i == len(parts) else r"(?![\w.])")
            if re.search(pattern, sources):
                return True
        # pdb.yaml reads each component's pdb as (index $.Values $component).pdb.
        return bool(re.fullmatch(r"\.Values\.(gateway|orchestrator|triton)\.pdb\..+", path)) and \
            "(index $.Values $component).pdb" in sources

    unused = [leaf for leaf in leaves(values, ".Values") if not used(leaf)]
    assert not unused, unused


@pytest.mark.parametrize("profile", PROFILES)
def test_triton_entry_writes_the_profile_kind_into_valid_model_configs(profile: str, tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from deploy.docker.triton_entry import main as triton_entry

    command = pod_spec(find(render(profile_values(profile)), "StatefulSet", "-triton"))["containers"][0]["command"]
    own = command[2:command.index("--")]  # after python3 and the script path
    kind = own[own.index("--kind") + 1]
    source = CHART.parents[2] / "model_repository"
    target = tmp_path / "models"
    triton_entry([*own[:own.index("--source")], "--source", str(source), "--target", str(target), "--kind", kind,
                  "--dry-run"])
    models = sorted(p.name for p in target.iterdir())
    assert models == ["audio_features", "face_detection", "generator"]
    for model in models:
        config = text_format.Parse((target / model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        kinds = {model_config_pb2.ModelInstanceGroup.Kind.Name(group.kind) for group in config.instance_group}
        assert kinds == {kind}
        assert (target / model / "1" / "model.py").is_file()


def test_triton_entry_clears_only_its_servers_regions_that_no_process_maps(tmp_path: Path) -> None:
    """A restarted Triton container finds its killed predecessor's stub files in the pod's
    /dev/shm: those go; a file a live process maps, or another prefix's, stays."""
    import subprocess
    import sys

    from deploy.docker.triton_entry import clear_stale_regions, stub_region_prefix

    command = pod_spec(find(render(profile_values("default")), "StatefulSet", "-triton"))["containers"][0]["command"]
    prefix = stub_region_prefix(command[command.index("--") + 1:])
    assert prefix.startswith("lipsyncd-")  # the chart names its own, apart from other servers on the host
    stale, live = tmp_path / f"{prefix}dead", tmp_path / f"{prefix}live"
    others = [tmp_path / "triton_python_backend_shm_region_1", tmp_path / "PostgreSQL.1"]
    for path in (stale, live, *others):
        path.write_bytes(b"\0" * 4096)
    holder = subprocess.Popen([sys.executable, "-c", "import mmap, sys; f = open(sys.argv[1], 'r+b'); "
                               "m = mmap.mmap(f.fileno(), 0); print('mapped', flush=True); sys.stdin.read()", str(live)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "mapped"
        assert clear_stale_regions(tmp_path, prefix) == [stale.name]
    finally:
        holder.communicate("")
    assert not stale.exists() and live.exists() and all(path.exists() for path in others)
    assert clear_stale_regions(tmp_path, prefix) == [live.name]  # its process is gone
    assert stub_region_prefix(["tritonserver", "--model-repository=/m"]) == "triton_python_backend_shm_region_"


def test_the_in_chart_nats_has_one_user_per_component_with_the_topology_permissions() -> None:
    import json

    from proto.topology import NATS_PERMISSIONS

    assert json.loads((CHART / "files" / "nats-permissions.json").read_text()) == NATS_PERMISSIONS, (
        "deploy/k8s/lipsyncd/files/nats-permissions.json differs from proto/topology.py NATS_PERMISSIONS")
    docs = render(profile_values("default"))
    config = find(docs, "ConfigMap", "-nats")["data"]["auth.conf"]
    for user, permissions in NATS_PERMISSIONS.items():
        line = next(line for line in config.splitlines() if f"$NATS_{user.upper()}_USER" in line)
        assert json.loads(line.split("permissions: ", 1)[1][:-1]) == permissions
    nats = pod_spec(find(docs, "StatefulSet", "-nats"))
    env = {e["name"]: e["valueFrom"]["secretKeyRef"]["key"] for e in nats["containers"][0]["env"]}
    assert env == {f"NATS_{u.upper()}_{f.upper()}": f"nats-{u}-{f}" for u in NATS_PERMISSIONS for f in ("user", "password")}
    for component in ("gateway", "orchestrator"):
        client = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
                  for e in pod_spec(find(docs, "Deployment", f"-{component}"))["containers"][0]["env"]}
        assert client["LIPSYNCD_NATS_USER"] == f"nats-{component}-user"
        assert client["LIPSYNCD_NATS_PASSWORD"] == f"nats-{component}-password"
    off = render(profile_values("default", {"nats": {"auth": {"enabled": False}}}))
    assert not [d for d in off if d["kind"] == "ConfigMap"]
    assert not [k for k in find(off, "Secret", "-secrets")["data"] if k.startswith("nats-")]


def test_s3_storage_is_wired_from_values_and_the_secret() -> None:
    s3 = {"storage": {"url": "s3://media-bucket/lipsyncd", "s3": {"endpointUrl": "https://minio.infra:9000",
                                                                 "region": "eu-west-1"}},
          "secrets": {"s3": {"accessKeyId": "AKIA1", "secretAccessKey": "s3cr3t"}}}
    docs = render(profile_values("default", s3))
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]
    secret = find(docs, "Secret", "-secrets")
    assert {"s3-access-key-id", "s3-secret-access-key"} <= set(secret["data"])
    for component in ("gateway", "orchestrator"):
        spec = pod_spec(find(docs, "Deployment", f"-{component}"))
        env = {e["name"]: e.get("value") or e["valueFrom"]["secretKeyRef"]["key"] for e in spec["containers"][0]["env"]}
        assert env["LIPSYNCD_STORAGE_URL"] == "s3://media-bucket/lipsyncd"
        assert env["AWS_ENDPOINT_URL"] == "https://minio.infra:9000" and env["AWS_DEFAULT_REGION"] == "eu-west-1"
        assert env["AWS_ACCESS_KEY_ID"] == "s3-access-key-id" and env["AWS_SECRET_ACCESS_KEY"] == "s3-secret-access-key"
        assert env["LIPSYNCD_SCALE_OUT"] == "1" and env["LIPSYNCD_SECRET_KEY"] == "secret-key"
        assert "LIPSYNCD_STORAGE_DIR" not in env and "storage" not in {v["name"] for v in spec["volumes"]}
    with pytest.raises(helm.HelmError, match="secrets.s3.accessKeyId is required"):
        render(profile_values("default", {"storage": s3["storage"]}))
    own_identity = render(profile_values("default", {"storage": {**s3["storage"], "s3": {"credentialsFromSecret": False}}}))
    gateway = pod_spec(find(own_identity, "Deployment", "-gateway"))["containers"][0]
    assert not [e for e in gateway["env"] if e["name"].startswith("AWS_ACCESS")]
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmValuesError):
        chart.validate_schema(chart.merge_values({**REQUIRED, "storage": {"url": "gs://bucket"}}))


def test_every_orchestrator_gets_each_triton_pod_by_its_stable_name() -> None:
    docs = render(profile_values("gpu", {"triton": {"replicas": 3}}))
    triton = find(docs, "StatefulSet", "-triton")
    assert triton["spec"]["serviceName"] == find(docs, "Service", "-triton")["metadata"]["name"] == "lipsyncd-triton"
    assert triton["spec"]["podManagementPolicy"] == "Parallel"
    env = {e["name"]: e.get("value") for e in pod_spec(find(docs, "Deployment", "-orchestrator"))["containers"][0]["env"]}
    assert env["LIPSYNCD_TRITON_URLS"].split(",") == [
        f"lipsyncd-triton-{i}.lipsyncd-triton.lipsyncd.svc:8001" for i in range(3)]


def test_trusted_proxies_reach_the_gateway_only() -> None:
    docs = render(profile_values("default", {"config": {"trustedProxies": ["10.42.0.0/16", "fd00::/8"]}}))
    gateway = {e["name"]: e.get("value") for e in pod_spec(find(docs, "Deployment", "-gateway"))["containers"][0]["env"]}
    assert gateway["LIPSYNCD_TRUSTED_PROXIES"] == "10.42.0.0/16,fd00::/8"
    orchestrator = pod_spec(find(docs, "Deployment", "-orchestrator"))["containers"][0]["env"]
    assert not [e for e in orchestrator if e["name"] == "LIPSYNCD_TRUSTED_PROXIES"]
    plain = pod_spec(find(render(profile_values("default")), "Deployment", "-gateway"))["containers"][0]["env"]
    assert not [e for e in plain if e["name"] == "LIPSYNCD_TRUSTED_PROXIES"]
