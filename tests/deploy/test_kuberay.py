"""deploy/kuberay/: a RayCluster for GPU workers whose head runs the Sightline controller, its ConfigMap and
Service. No Kubernetes here: the built-in objects (ConfigMap, Service, both pod templates) go through the
Kubernetes OpenAPI schemas offline (kubernetes-validate, strict: unknown fields fail); the RayCluster's own
fields, a custom resource with no schema in that package, are checked against KubeRay's ray.io/v1 field names
by hand. Image, ports, user, config and Ray version are checked against the Dockerfile, constraints.txt and
the config loader."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from sightline.run_cli import apply_environment
from sightline.stream.config import load_run_config
from sightline.stream.service.auth import require_safe_bind
from sightline.stream.service.guard import HostPolicy

from tests.support.deploy_files import (
    KUBERAY,
    constraints,
    dockerfile_values,
    kuberay_object,
    kuberay_objects,
    project,
)

# ray.io/v1 RayCluster fields (KubeRay's CRD) that this manifest may use.
SPEC_FIELDS = {"rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions",
               "headServiceAnnotations", "suspend", "gcsFaultToleranceOptions", "managedBy"}
HEAD_FIELDS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress"}
WORKER_FIELDS = {"groupName", "replicas", "minReplicas", "maxReplicas", "rayStartParams", "template",
                 "scaleStrategy", "numOfHosts", "idleTimeoutSeconds", "suspend"}


def raycluster() -> dict[str, Any]:
    return kuberay_object("RayCluster")


def head_pod() -> dict[str, Any]:
    return raycluster()["spec"]["headGroupSpec"]["template"]["spec"]


def worker_pods() -> list[dict[str, Any]]:
    return [g["template"]["spec"] for g in raycluster()["spec"]["workerGroupSpecs"]]


def all_pods() -> list[dict[str, Any]]:
    return [head_pod(), *worker_pods()]


def controller() -> dict[str, Any]:
    (found,) = [c for c in head_pod()["containers"] if "sightline run" in " ".join(c.get("command", []))]
    return found


def cluster_config(tmp_path: Path):
    path = tmp_path / "config.yaml"
    path.write_text(kuberay_object("ConfigMap")["data"]["config.yaml"])
    return load_run_config(path)


def as_pod_template(name: str, template: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template}


def test_manifests_are_a_raycluster_a_configmap_and_a_service() -> None:
    kinds = sorted((o["apiVersion"], o["kind"]) for o in kuberay_objects())
    assert kinds == [("ray.io/v1", "RayCluster"), ("v1", "ConfigMap"), ("v1", "Service")]
    for obj in kuberay_objects():
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])


def test_builtin_objects_and_pod_templates_pass_the_kubernetes_schema_strictly() -> None:
    version = kubernetes_validate.latest_version()
    for kind in ("ConfigMap", "Service"):
        kubernetes_validate.validate(kuberay_object(kind), version, strict=True)
    spec = raycluster()["spec"]
    kubernetes_validate.validate(as_pod_template("head", spec["headGroupSpec"]["template"]), version, strict=True)
    for group in spec["workerGroupSpecs"]:
        kubernetes_validate.validate(as_pod_template(group["groupName"], group["template"]), version, strict=True)


def test_the_schema_check_does_catch_a_misspelt_field() -> None:
    template = copy.deepcopy(raycluster()["spec"]["headGroupSpec"]["template"])
    template["spec"]["containers"][1]["securityContext"] = {"readOnlyRootFileSystem": True}
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFileSystem"):
        kubernetes_validate.validate(as_pod_template("head", template), kubernetes_validate.latest_version(),
                                     strict=True)


def test_raycluster_uses_only_kuberay_fields_and_string_start_params() -> None:
    spec = raycluster()["spec"]
    assert set(spec) <= SPEC_FIELDS and {"rayVersion", "headGroupSpec", "workerGroupSpecs"} <= set(spec)
    assert set(spec["headGroupSpec"]) <= HEAD_FIELDS
    groups = spec["workerGroupSpecs"]
    assert groups and len({g["groupName"] for g in groups}) == len(groups)
    for group in groups:
        assert set(group) <= WORKER_FIELDS and {"groupName", "rayStartParams", "template"} <= set(group)
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    for params in [spec["headGroupSpec"]["rayStartParams"], *(g["rayStartParams"] for g in groups)]:
        assert all(isinstance(v, str) for v in params.values()), params  # map[string]string in the CRD
        assert "block" not in params  # KubeRay adds --block itself


def test_workers_have_one_gpu_each_and_the_head_none() -> None:
    for pod in worker_pods():
        ray = pod["containers"][0]
        assert ray["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert ray["resources"].get("requests", {}).get("nvidia.com/gpu", 1) == 1
    for container in head_pod()["containers"]:
        assert "nvidia.com/gpu" not in str(container.get("resources"))
    assert raycluster()["spec"]["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"  # no pipeline on the head


def test_head_runs_the_controller_on_the_config_from_the_configmap(tmp_path: Path) -> None:
    command = " ".join(controller()["command"])
    assert "exec sightline run /config/config.yaml --ray auto" in command
    assert "ray health-check" in command  # waits for the Ray head in containers[0] before joining it
    mounts = {m["mountPath"]: m["name"] for m in controller()["volumeMounts"]}
    volumes = {v["name"]: v for v in head_pod()["volumes"]}
    assert volumes[mounts["/config"]]["configMap"]["name"] == kuberay_object("ConfigMap")["metadata"]["name"]
    # `--ray auto` finds the head through /tmp/ray: the Ray container and the controller share /tmp
    ray_mounts = {m["mountPath"]: m["name"] for m in head_pod()["containers"][0]["volumeMounts"]}
    assert ray_mounts["/tmp"] == mounts["/tmp"] and "emptyDir" in volumes[mounts["/tmp"]]
    # and the driver finds the head's raylet among the processes it sees: one PID namespace for the pod
    assert head_pod()["shareProcessNamespace"] is True
    config = cluster_config(tmp_path)
    assert config.server.host == "0.0.0.0" and config.server.token is None and config.streams == []
    # with the Secret's tokens in the environment it passes the start checks (a bind beyond loopback needs both)
    env = {e["name"]: e for e in controller()["env"]}
    assert {"SIGHTLINE_TOKEN", "SIGHTLINE_VIEWER_TOKEN"} <= set(env)
    secrets = {"SIGHTLINE_TOKEN": "t" * 32, "SIGHTLINE_VIEWER_TOKEN": "v" * 32}
    require_safe_bind(apply_environment(config, secrets).server)


def test_service_reaches_the_api_port_of_config_image_and_container(tmp_path: Path) -> None:
    port = cluster_config(tmp_path).server.port
    assert f"EXPOSE {port}" in [f"EXPOSE {p}" for p in dockerfile_values("EXPOSE")]
    (http,) = [p for p in controller()["ports"] if p["name"] == "http"]
    assert http["containerPort"] == port
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert controller()[probe]["httpGet"] == {"path": "/healthz", "port": "http"}  # the only endpoint stays
    service = kuberay_object("Service")
    (svc_port,) = service["spec"]["ports"]
    assert svc_port["targetPort"] == "http" and svc_port["port"] == port
    # KubeRay labels the head pod with its cluster name and node type
    assert service["spec"]["selector"] == {"ray.io/cluster": raycluster()["metadata"]["name"],
                                           "ray.io/node-type": "head"}
    # the Host check answers the Service's cluster DNS names (and refuses others)
    policy = HostPolicy("0.0.0.0", cluster_config(tmp_path).server.allowed_hosts)
    name = service["metadata"]["name"]
    for host in (f"{name}:{port}", f"{name}.video.svc:{port}", f"{name}.video.svc.cluster.local", "10.1.2.3:8080"):
        assert policy.host_allowed(host), host
    assert not policy.host_allowed("attacker.example.com")


def test_ray_metrics_port_does_not_take_the_api_port(tmp_path: Path) -> None:
    """KubeRay defaults Ray's metrics export to 8080 and adds a `metrics` port unless the container names one."""
    api = cluster_config(tmp_path).server.port
    spec = raycluster()["spec"]
    for params, pod in [(spec["headGroupSpec"]["rayStartParams"], head_pod()),
                        *((g["rayStartParams"], g["template"]["spec"]) for g in spec["workerGroupSpecs"])]:
        port = int(params["metrics-export-port"])
        assert port != api
        assert {"name": "metrics", "containerPort": port} in pod["containers"][0]["ports"]


def test_tokens_come_from_a_secret_never_from_the_configmap() -> None:
    env = {e["name"]: e for e in controller()["env"]}
    for name in ("SIGHTLINE_TOKEN", "SIGHTLINE_VIEWER_TOKEN", "SIGHTLINE_METRICS_TOKEN"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == "sightline-token" and ref["key"]
        assert "value" not in env[name]
    config_text = kuberay_object("ConfigMap")["data"]["config.yaml"]
    assert not re.search(r"^\s*token\s*:", config_text, re.M)
    assert not [o for o in kuberay_objects() if o["kind"] == "Secret"]  # created by the operator, not committed


def test_same_image_everywhere_and_the_ray_version_it_pins() -> None:
    images = {c["image"] for pod in all_pods() for c in pod["containers"]}
    assert images == {f"sightline:{project()['version']}"}
    assert raycluster()["spec"]["rayVersion"] == constraints()["ray"]


def test_pods_run_as_the_image_user_with_a_read_only_root() -> None:
    uid, _, gid = dockerfile_values("USER")[-1].partition(":")
    writable = {"/tmp", "/data", "/dev/shm"}  # Ray's session, HOME/TORCH_HOME/output_dir, the object store
    for pod in all_pods():
        context = pod["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == int(uid) and context["runAsGroup"] == int(gid or uid)
        assert pod["automountServiceAccountToken"] is False
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert writable <= set(mounts), container["name"]
            for path in writable:
                assert "emptyDir" in volumes[mounts[path]["name"]] and not mounts[path].get("readOnly")


def test_ray_usage_stats_off_and_dashboard_on_loopback() -> None:
    for pod in all_pods():
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_USAGE_STATS_ENABLED") == "0", container["name"]
    assert raycluster()["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_image_answers_kuberays_probes() -> None:
    """KubeRay's default Ray probes run `wget ... | grep success` in containers[0]: the image installs wget."""
    installs = " ".join(a for a in dockerfile_values("RUN") if "apt-get install" in a)
    assert re.search(r"\bwget\b", installs)
    # and its Ray is the one the RayCluster announces (checked above) through the `cluster` extra
    assert any('".[cluster]"' in a for a in dockerfile_values("RUN"))


def test_manifest_yaml_is_plain() -> None:
    """Every file parses as YAML 1.1 the way kubectl reads it, with no duplicate keys."""

    class Strict(yaml.SafeLoader):
        pass

    def no_duplicates(loader: Strict, node: yaml.MappingNode, deep: bool = False) -> dict:
        keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
        assert len(keys) == len(set(keys)), f"duplicate keys in {keys}"
        return loader.construct_mapping(node, deep)

    Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, no_duplicates)
    for path in sorted(KUBERAY.glob("*.yaml")):
        assert list(yaml.load_all(path.read_text(), Loader=Strict)), path
