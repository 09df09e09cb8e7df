"""Rules every container of every overlay keeps, checked by one function, `violations`, whose
controls show it catches each broken rule: requests and limits, non-root, read-only root
filesystem, no capabilities, no privilege escalation, probes on everything that serves, pinned
image tags, secrets only through Secrets. Sidecars the injector adds get requests and limits
from annotations.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable

import pytest
from k8s_manifests import Object, dapr_apps, of_kind, pod_specs, rendered

SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL|DATABASE_URL|_URL$", re.I)
# user:password@ in a URL.
URL_CREDENTIALS = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
SIDECAR_RESOURCES = [
    f"dapr.io/sidecar-{resource}-{bound}"
    for resource in ("cpu", "memory")
    for bound in ("request", "limit")
]


def image_is_pinned(image: str) -> bool:
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def container_violations(where: str, pod: Object, container: Object, serves: bool) -> list[str]:
    found = []
    pod_security = pod.get("securityContext", {})
    security = container.get("securityContext", {})

    def setting(key: str) -> object:
        return security.get(key, pod_security.get(key))

    resources = container.get("resources", {})
    for bound in ("requests", "limits"):
        for resource in ("cpu", "memory"):
            if resource not in resources.get(bound, {}):
                found.append(f"{where}: no {resource} {bound[:-1]}")
    if setting("runAsNonRoot") is not True:
        found.append(f"{where}: runAsNonRoot is not true")
    if setting("runAsUser") in (None, 0):
        found.append(f"{where}: no numeric non-root runAsUser")
    if security.get("readOnlyRootFilesystem") is not True:
        found.append(f"{where}: root filesystem is writable")
    if security.get("allowPrivilegeEscalation") is not False:
        found.append(f"{where}: privilege escalation allowed")
    if security.get("capabilities", {}).get("drop") != ["ALL"] or security.get(
        "capabilities", {}
    ).get("add"):
        found.append(f"{where}: capabilities not dropped")
    if security.get("privileged"):
        found.append(f"{where}: privileged")
    if not image_is_pinned(container.get("image", "")):
        found.append(f"{where}: image {container.get('image')!r} has no pinned tag")
    if serves:
        for probe in ("readinessProbe", "livenessProbe"):
            if probe not in container:
                found.append(f"{where}: no {probe}")
    for item in container.get("env", []):
        value = item.get("value")
        if value is None:
            continue
        if SECRET_NAME.search(item["name"]) or URL_CREDENTIALS.search(value):
            found.append(f"{where}: {item['name']} is set in plain text, not from a Secret")
    return found


def violations(objects: list[Object]) -> list[str]:
    found = []
    for workload, pod in pod_specs(objects):
        name = f"{workload['kind']} {workload['metadata']['name']}"
        # A Job's pod runs to completion: probes would only restart it.
        serves = workload["kind"] != "Job"
        if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
            found.append(f"{name}: shares the host's namespaces")
        if pod.get("automountServiceAccountToken") is not False:
            found.append(f"{name}: mounts a Kubernetes API token it does not need")
        for container in pod.get("initContainers", []):
            found += container_violations(f"{name}/{container['name']}", pod, container, False)
        for container in pod["containers"]:
            found += container_violations(f"{name}/{container['name']}", pod, container, serves)
    for app_id, deployment in dapr_apps(objects).items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        found += [f"{app_id}: no {key}" for key in SIDECAR_RESOURCES if key not in annotations]
    for component in of_kind(objects, "Component").values():
        for item in component["spec"].get("metadata", []):
            if "value" in item and SECRET_NAME.search(item["name"]):
                name = component["metadata"]["name"]
                found.append(f"component {name}: {item['name']} is in plain text")
    return found


def test_every_container_keeps_the_rules(objects: list[Object]) -> None:
    assert violations(objects) == []


def test_the_namespace_enforces_the_restricted_pod_security_standard(
    objects: list[Object],
) -> None:
    (namespace,) = of_kind(objects, "Namespace").values()
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert {obj["metadata"].get("namespace") for obj in objects if obj["kind"] != "Namespace"} == {
        namespace["metadata"]["name"]
    }


def test_production_runs_at_least_two_of_everything() -> None:
    objects = rendered("production")
    for name, deployment in of_kind(objects, "Deployment").items():
        assert deployment["spec"]["replicas"] >= 2, name
    for name, hpa in of_kind(objects, "HorizontalPodAutoscaler").items():
        assert hpa["spec"]["minReplicas"] >= 2, name
    assert not of_kind(objects, "StatefulSet"), "production uses external stores"


def test_every_app_has_an_autoscaler_and_a_disruption_budget(objects: list[Object]) -> None:
    apps = dapr_apps(objects)
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    pdbs = of_kind(objects, "PodDisruptionBudget")
    for app_id in apps:
        assert hpas[app_id]["spec"]["scaleTargetRef"]["name"] == app_id
        assert pdbs[app_id]["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": app_id}


def test_ingress_is_denied_unless_a_policy_lets_it_in(objects: list[Object]) -> None:
    policies = of_kind(objects, "NetworkPolicy")
    assert policies["default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    labelled = {
        pod_template_name
        for workload, _ in pod_specs(objects)
        if (
            pod_template_name := workload["spec"]["template"]["metadata"]["labels"].get(
                "app.kubernetes.io/name"
            )
        )
    }
    covered = {
        policy["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        for policy in policies.values()
    }
    # Every workload that listens has its own policy; the init Job listens on nothing.
    assert labelled - covered == {"catalog-db-init"}


def breaks(mutate: Callable[[Object], None]) -> list[Object]:
    objects = copy.deepcopy(rendered("local"))
    deployment = next(
        obj
        for obj in objects
        if obj["metadata"]["name"] == "basket-api" and obj["kind"] == "Deployment"
    )
    mutate(deployment["spec"]["template"])
    return objects


def app(template: Object) -> Object:
    container: Object = template["spec"]["containers"][0]
    return container


MUTATIONS: dict[str, Callable[[Object], None]] = {
    "no memory limit": lambda t: app(t)["resources"]["limits"].pop("memory"),
    "runs as root": lambda t: t["spec"]["securityContext"].update(runAsUser=0),
    "not non-root": lambda t: t["spec"]["securityContext"].pop("runAsNonRoot"),
    "writable root": lambda t: app(t)["securityContext"].update(readOnlyRootFilesystem=False),
    "a capability": lambda t: app(t)["securityContext"]["capabilities"].update(add=["NET_ADMIN"]),
    "latest tag": lambda t: app(t).update(image="eshop/basket-api:latest"),
    "no tag": lambda t: app(t).update(image="eshop/basket-api"),
    "no readiness probe": lambda t: app(t).pop("readinessProbe"),
    "no liveness probe": lambda t: app(t).pop("livenessProbe"),
    "plaintext secret": lambda t: app(t)["env"].append({"name": "JWT_SECRET", "value": "x"}),
    "password in a URL": lambda t: app(t)["env"].append(
        {"name": "CATALOG", "value": "postgresql://u:p@db/catalog"}
    ),
    "API token mounted": lambda t: t["spec"].update(automountServiceAccountToken=True),
    "no sidecar limit": lambda t: t["metadata"]["annotations"].pop("dapr.io/sidecar-cpu-limit"),
}


@pytest.mark.parametrize("what", sorted(MUTATIONS))
def test_control_the_policy_catches(what: str) -> None:
    assert violations(breaks(MUTATIONS[what])), f"{what} went unnoticed"
