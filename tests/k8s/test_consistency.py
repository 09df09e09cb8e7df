"""The cluster runs the system the local stack and compose run: the app ids, ports and environment
names of dapr.yaml and docker-compose.yml, the components of components/ (secrets from the
Kubernetes secret store instead of the environment), the images compose builds and the versions
scripts/versions.env pins. Dapr annotations are ones the pinned sidecar injector reads.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_manifests import (
    REPO,
    Object,
    compose,
    dapr_apps,
    dapr_crds,
    dapr_module,
    env_of,
    of_kind,
    pinned,
    pod_specs,
    rendered,
)

from devstack.runfile import load_run_file

APPS = load_run_file(REPO / "dapr.yaml")
COMPONENTS = REPO / "components"
DOCS_CHAPTER = REPO / "docs" / "10-kubernetes.md"


def local_resources(path: Path) -> list[Object]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def main_container(deployment: Object) -> Object:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "one app container per pod; Dapr injects the sidecar"
    container: Object = containers[0]
    return container


@pytest.fixture(scope="module")
def injector_annotations() -> dict[str, str]:
    """dapr.io/* annotation -> the Go type of the SidecarConfig field the pinned injector fills."""
    source = (dapr_module() / "pkg" / "injector" / "patcher" / "sidecar.go").read_text()
    fields = re.findall(r'^\s+\w+\s+(\*?\w+)\s+`annotation:"(dapr\.io/[\w-]+)"', source, re.M)
    assert len(fields) > 40, "the injector's SidecarConfig no longer reads as expected"
    return {annotation: go_type for go_type, annotation in fields}


def injector_default(field: str) -> str:
    source = (dapr_module() / "pkg" / "injector" / "patcher" / "sidecar.go").read_text()
    match = re.search(rf'^\s+{field}\s+\w+\s+`default:"([^"]*)"`', source, re.M)
    assert match, f"SidecarConfig.{field} has no default"
    return match[1]


# -- apps -----------------------------------------------------------------------------------------
def test_the_apps_are_dapr_yamls_apps_with_its_ports(objects: list[Object]) -> None:
    apps = dapr_apps(objects)
    assert set(apps) == set(APPS)
    services = of_kind(objects, "Service")
    for app_id, deployment in apps.items():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        port = APPS[app_id].app_port
        assert deployment["metadata"]["name"] == app_id
        assert annotations["dapr.io/app-port"] == str(port)
        assert annotations["dapr.io/app-protocol"] == APPS[app_id].app_protocol
        assert main_container(deployment)["ports"] == [{"name": "http", "containerPort": port}]
        assert services[app_id]["spec"]["ports"][0]["port"] == port
        env = env_of(main_container(deployment))
        assert env["APP_PORT"]["value"] == str(port)
        # The sidecar's port inside the pod: the injector's default, not dapr.yaml's per-app one.
        assert env["DAPR_HTTP_PORT"]["value"] == injector_default("SidecarHTTPPort")


def test_the_apps_read_the_environment_names_compose_gives_them(objects: list[Object]) -> None:
    services = compose()["services"]
    for app_id, deployment in dapr_apps(objects).items():
        assert set(env_of(main_container(deployment))) == set(services[app_id]["environment"])


def test_the_images_are_the_ones_compose_builds_and_pins(objects: list[Object]) -> None:
    services = compose()["services"]
    for workload, pod in pod_specs(objects):
        for container in pod.get("initContainers", []) + pod["containers"]:
            name = workload["metadata"]["name"]
            if name in services:
                assert container["image"] == services[name]["image"], name
            else:
                # The catalog's init Job and init container run the catalog's image.
                assert container["image"] == services["catalog-api"]["image"], name


def test_the_catalog_db_init_job_runs_composes_command(objects: list[Object]) -> None:
    job = of_kind(objects, "Job")["catalog-db-init"]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    init = compose()["services"]["catalog-db-init"]
    assert container["command"] == init["command"]
    assert set(env_of(container)) == set(init["environment"])
    wait = of_kind(objects, "Deployment")["catalog-api"]["spec"]["template"]["spec"]
    assert [c["name"] for c in wait["initContainers"]] == ["wait-for-schema"]


def test_the_sidecar_is_the_pinned_daprd(objects: list[Object]) -> None:
    image = f"daprio/daprd:{pinned('DAPR_VERSION')}"
    assert compose()["x-sidecar"]["image"] == image
    for deployment in dapr_apps(objects).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/sidecar-image"] == image


def test_every_dapr_annotation_is_one_the_pinned_injector_reads(
    objects: list[Object], injector_annotations: dict[str, str]
) -> None:
    formats = {"bool": r"true|false", "int32": r"\d+", "*int": r"\d+", "int": r"-?\d+"}
    for deployment in dapr_apps(objects).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        for key, value in annotations.items():
            if not key.startswith("dapr.io/"):
                continue
            assert key in injector_annotations, f"the injector does not read {key}"
            pattern = formats.get(injector_annotations[key], r".*")
            assert re.fullmatch(pattern, value), f"{key}: {value!r}"
        required = {
            "dapr.io/enabled",
            "dapr.io/app-id",
            "dapr.io/app-port",
            "dapr.io/config",
            "dapr.io/api-token-secret",
            "dapr.io/app-token-secret",
            "dapr.io/enable-app-health-check",
            "dapr.io/app-health-check-path",
            "dapr.io/sidecar-cpu-request",
            "dapr.io/sidecar-cpu-limit",
            "dapr.io/sidecar-memory-request",
            "dapr.io/sidecar-memory-limit",
        }
        assert required <= set(annotations)


def test_the_sidecar_health_check_path_is_dapr_yamls(objects: list[Object]) -> None:
    common = yaml.safe_load((REPO / "dapr.yaml").read_text())["common"]
    for deployment in dapr_apps(objects).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["dapr.io/app-health-check-path"] == common["appHealthCheckPath"]


def test_the_control_annotation_check_catches_a_misspelt_annotation(
    injector_annotations: dict[str, str],
) -> None:
    assert "dapr.io/app-port" in injector_annotations
    assert "dapr.io/appport" not in injector_annotations
    assert "dapr.io/sidecar-memory-limits" not in injector_annotations


# -- Dapr resources -------------------------------------------------------------------------------
def metadata_items(component: Object) -> dict[str, Object]:
    return {item["name"]: item for item in component["spec"].get("metadata", [])}


def test_the_components_are_the_local_ones_with_secrets_from_kubernetes(overlay: str) -> None:
    objects = rendered(overlay)
    cluster = of_kind(objects, "Component")
    local = {
        doc["metadata"]["name"]: doc
        for path in sorted(COMPONENTS.glob("*.yaml"))
        for doc in local_resources(path)
        if doc["kind"] == "Component"
    }
    assert set(cluster) == set(local)
    for name, component in cluster.items():
        mine = local[name]
        assert component["spec"]["type"] == mine["spec"]["type"]
        assert component["spec"]["version"] == mine["spec"]["version"]
        assert component["scopes"] == mine["scopes"]
        assert set(component["scopes"]) <= set(APPS)
        items, local_items = metadata_items(component), metadata_items(mine)
        extra = {"enableTLS"} if overlay == "production" else set()
        assert set(items) == set(local_items) | extra, name
        for key, item in local_items.items():
            if "envRef" in item:
                # What the local stack reads from the sidecar's environment comes from a Secret.
                assert set(items[key]) == {"name", "secretKeyRef"}, f"{name}.{key}"
            else:
                assert items[key] == item, f"{name}.{key}"
        assert component.get("auth") == {"secretStore": "kubernetes"}


def prune(node: Any, schema: Object) -> Any:
    """`node` as the API server stores it: fields the schema does not define are dropped."""
    if isinstance(node, dict) and schema.get("type") == "object":
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            return {
                key: prune(value, schema["properties"][key])
                for key, value in node.items()
                if key in schema["properties"]
            }
        if isinstance(schema.get("additionalProperties"), dict):
            return {
                key: prune(value, schema["additionalProperties"]) for key, value in node.items()
            }
        return node
    if isinstance(node, list) and "items" in schema:
        return [prune(item, schema["items"]) for item in node]
    return node


@pytest.mark.parametrize(
    ("kind", "api_version", "local_file"),
    [
        ("Resiliency", "v1alpha1", "resiliency.yaml"),
        ("Subscription", "v2alpha1", "subscriptions.yaml"),
    ],
)
def test_resiliency_and_subscriptions_are_the_local_ones(
    objects: list[Object], kind: str, api_version: str, local_file: str
) -> None:
    schema = dapr_crds()[("dapr.io", api_version, kind)]
    local = {doc["metadata"]["name"]: doc for doc in local_resources(COMPONENTS / local_file)}
    cluster = of_kind(objects, kind)
    assert set(cluster) == set(local)
    for name, resource in cluster.items():
        for field in ("spec", "scopes"):
            as_read = prune(local[name], schema).get(field)
            assert resource.get(field) == as_read, f"{kind} {name}: {field}"


def test_the_configuration_resolves_names_through_kubernetes(objects: list[Object]) -> None:
    configs = of_kind(objects, "Configuration")
    for deployment in dapr_apps(objects).values():
        name = deployment["spec"]["template"]["metadata"]["annotations"]["dapr.io/config"]
        spec = configs[name]["spec"]
        assert spec["nameResolution"]["component"] == "kubernetes"
        assert 0 < float(spec["tracing"]["samplingRate"]) <= 1
    local = local_resources(COMPONENTS / "config" / "local.yaml")[0]["spec"]
    assert local["nameResolution"]["component"] == "sqlite"


def test_the_pinned_chart_turns_mtls_on_and_the_docs_install_it_so() -> None:
    """The control plane's `daprsystem` Configuration decides mTLS for every sidecar."""
    chart = dapr_module() / "charts" / "dapr"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert values["global"]["mtls"]["enabled"] is True
    template = chart / "charts" / "dapr_config" / "templates" / "dapr_default_config.yaml"
    assert "enabled: {{ .Values.global.mtls.enabled }}" in template.read_text()
    docs = DOCS_CHAPTER.read_text()
    assert "--set global.mtls.enabled=true" in docs
    assert f"--version {pinned('DAPR_VERSION')}" in docs


# -- secrets --------------------------------------------------------------------------------------
def secret_references(objects: list[Object]) -> set[tuple[str, str]]:
    """(Secret, key) pairs that pods, the sidecar injector and components read."""
    refs = set()
    for _, pod in pod_specs(objects):
        for container in pod.get("initContainers", []) + pod["containers"]:
            for item in container.get("env", []):
                if ref := item.get("valueFrom", {}).get("secretKeyRef"):
                    refs.add((ref["name"], ref["key"]))
    for deployment in dapr_apps(objects).values():
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        for key in ("dapr.io/api-token-secret", "dapr.io/app-token-secret"):
            refs.add((annotations[key], "token"))
    for component in of_kind(objects, "Component").values():
        for item in component["spec"].get("metadata", []):
            if ref := item.get("secretKeyRef"):
                refs.add((ref["name"], ref["key"]))
    return refs


def secret_values(objects: list[Object]) -> dict[tuple[str, str], str]:
    return {
        (name, key): base64.b64decode(value).decode()
        for name, secret in of_kind(objects, "Secret").items()
        for key, value in secret.get("data", {}).items()
    }


def test_the_local_overlay_has_every_secret_with_composes_demo_values() -> None:
    objects = rendered("local")
    values = secret_values(objects)
    assert secret_references(objects) <= set(values)
    env = compose()["x-app-environment"]
    assert values["eshop-jwt", "secret"] == env["JWT_SECRET"]
    assert values["eshop-dapr-api-token", "token"] == env["DAPR_API_TOKEN"]
    assert values["eshop-app-api-token", "token"] == env["APP_API_TOKEN"]
    assert (
        values["eshop-redis", "password"] == compose()["x-sidecar"]["environment"]["REDIS_PASSWORD"]
    )
    postgres = compose()["services"]["postgres"]["environment"]
    assert values["eshop-postgres", "password"] == postgres["POSTGRES_PASSWORD"]
    assert values["eshop-catalog-db", "url"] == compose()["x-catalog-database"]["DATABASE_URL"]
    # Compose's Redis and PostgreSQL are reached by the same names as the overlay's Services.
    assert values["eshop-redis", "host"] == compose()["x-sidecar"]["environment"]["REDIS_HOST"]
    assert {"redis", "postgres"} <= set(of_kind(objects, "Service"))


def create_secret_command(docs: str, name: str) -> str:
    """The `kubectl create secret generic <name> ...` command in the docs, continuation lines
    included (empty when there is none)."""
    match = re.search(rf"create secret generic {name}\b(?:[^\n]*\\\n)*[^\n]*", docs)
    return match[0] if match else ""


def test_production_names_its_secrets_and_creates_none() -> None:
    objects = rendered("production")
    assert not of_kind(objects, "Secret")
    header = (
        REPO / "deploy" / "k8s" / "overlays" / "production" / "kustomization.yaml"
    ).read_text()
    docs = DOCS_CHAPTER.read_text()
    for name, key in secret_references(objects):
        assert re.search(rf"#\s+{name}\s+.*\b{key}\b", header), f"{name}/{key} not listed"
        assert f"--from-literal={key}=" in create_secret_command(docs, name), (
            f"docs/10-kubernetes.md does not create {name} with {key}"
        )


# -- stores (local overlay) -----------------------------------------------------------------------
def test_the_local_stores_run_like_composes() -> None:
    objects = rendered("local")
    sets = of_kind(objects, "StatefulSet")
    services = compose()["services"]
    (redis,) = sets["redis"]["spec"]["template"]["spec"]["containers"]
    assert redis["image"] == services["redis"]["image"]
    password = services["redis"]["command"][-1]
    assert redis["args"] == [
        arg if arg != password else "$(REDIS_PASSWORD)" for arg in services["redis"]["command"]
    ]
    (postgres,) = sets["postgres"]["spec"]["template"]["spec"]["containers"]
    assert postgres["image"] == services["postgres"]["image"]
    assert (
        env_of(postgres)["POSTGRES_DB"]["value"]
        == services["postgres"]["environment"]["POSTGRES_DB"]
    )
