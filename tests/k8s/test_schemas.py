"""Every object every overlay renders is one the API server would accept: Kubernetes kinds against
the pinned Kubernetes version's schemas (kubernetes-validate, strict: unknown fields fail, as
`kubectl apply`'s server-side strict field validation does), Dapr kinds against the CRDs of the
pinned Dapr module. Controls show that each validator rejects a broken manifest.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from k8s_manifests import DEPLOY, Object, dapr_crds, of_kind, pinned, render, rendered

DAPR_GROUP = "dapr.io"


def is_dapr(obj: Object) -> bool:
    return str(obj["apiVersion"]).startswith(f"{DAPR_GROUP}/")


def validate_kubernetes(obj: Object) -> None:
    kubernetes_validate.validate(obj, pinned("KUBERNETES_VERSION"), strict=True)


def strict_schema(node: Any, top: bool = True) -> Any:
    """A CRD's structural schema as JSON Schema that, like the API server with strict field
    validation, refuses fields the schema does not name."""
    if isinstance(node, list):
        return [strict_schema(item, top=False) for item in node]
    if not isinstance(node, dict):
        return node
    schema = {
        key: strict_schema(value, top=False)
        for key, value in node.items()
        if not key.startswith("x-kubernetes-") and key != "nullable"
    }
    if node.get("x-kubernetes-int-or-string"):
        schema["type"] = ["integer", "string"]
    if node.get("nullable") and isinstance(schema.get("type"), str):
        schema["type"] = [schema["type"], "null"]
    if (
        node.get("type") == "object"
        and "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        schema["additionalProperties"] = False
    if top:
        # metadata is ObjectMeta, which the CRD leaves open; the API server checks it itself.
        schema["properties"]["metadata"] = {"type": "object"}
    return schema


def validate_dapr(obj: Object) -> None:
    version = str(obj["apiVersion"]).split("/", 1)[1]
    key = (DAPR_GROUP, version, obj["kind"])
    crds = dapr_crds()
    assert key in crds, f"the pinned Dapr has no CRD for {obj['apiVersion']} {obj['kind']}"
    jsonschema.validate(obj, strict_schema(crds[key]))


def test_every_overlay_renders(overlay: str, objects: list[Object]) -> None:
    kinds = {obj["kind"] for obj in objects}
    assert {"Deployment", "Service", "Job", "Component", "Configuration"} <= kinds
    # Rendering the base on its own works too (an overlay is not hiding a broken base).
    assert render(DEPLOY / "base")


def test_every_kubernetes_object_is_valid_for_the_pinned_version(objects: list[Object]) -> None:
    for obj in objects:
        if not is_dapr(obj):
            validate_kubernetes(obj)


def test_every_dapr_resource_matches_the_pinned_crds(objects: list[Object]) -> None:
    dapr = [obj for obj in objects if is_dapr(obj)]
    assert {obj["kind"] for obj in dapr} == {
        "Component",
        "Configuration",
        "Resiliency",
        "Subscription",
    }
    for obj in dapr:
        validate_dapr(obj)


def mutations_kubernetes_validate_rejects() -> list[tuple[str, str, Any]]:
    return [
        ("misspelt field", "/spec/replica", 2),
        ("wrong type", "/spec/replicas", "two"),
        ("unknown container field", "/spec/template/spec/containers/0/imagePullPolicyy", "Always"),
        ("bad probe", "/spec/template/spec/containers/0/readinessProbe/httpGet/port", [1]),
    ]


def set_path(obj: Object, pointer: str, value: Any) -> Object:
    mutated = copy.deepcopy(obj)
    *parents, leaf = pointer.strip("/").split("/")
    node: Any = mutated
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[leaf] = value
    return mutated


@pytest.mark.parametrize(("what", "pointer", "value"), mutations_kubernetes_validate_rejects())
def test_control_kubernetes_validate_rejects_a_broken_deployment(
    what: str, pointer: str, value: Any
) -> None:
    deployment = of_kind(rendered("local"), "Deployment")["catalog-api"]
    validate_kubernetes(deployment)
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_kubernetes(set_path(deployment, pointer, value))


@pytest.mark.parametrize(
    ("kind", "name", "pointer", "value"),
    [
        ("Component", "statestore", "/spec/metdata", []),
        ("Component", "statestore", "/spec/metadata/0/secretKeyRef/nam", "eshop-redis"),
        ("Resiliency", "eshop-resiliency", "/spec/policies/retries/stateRetry/maxRetries", "2"),
        ("Subscription", "basket-follows-price-changes", "/spec/topicc", "x"),
        ("Configuration", "eshop", "/spec/tracing/samplingRate", 0.1),
    ],
)
def test_control_the_crd_schemas_reject_a_broken_dapr_resource(
    kind: str, name: str, pointer: str, value: Any
) -> None:
    resource = of_kind(rendered("local"), kind)[name]
    validate_dapr(resource)
    with pytest.raises(jsonschema.ValidationError):
        validate_dapr(set_path(resource, pointer, value))


def test_what_a_sidecar_reads_at_start_is_applied_before_any_pod(objects: list[Object]) -> None:
    """`kubectl apply` creates objects in the rendered order, and the Deployment controller
    starts pods as soon as their Deployment exists."""
    first_workload = min(
        i
        for i, obj in enumerate(objects)
        if obj["kind"] in ("Deployment", "StatefulSet", "Job", "DaemonSet", "Pod")
    )
    needed_first = ("Secret", "NetworkPolicy", "Namespace", "ServiceAccount")
    for i, obj in enumerate(objects):
        if is_dapr(obj) or obj["kind"] in needed_first:
            assert i < first_workload, f"{obj['kind']} {obj['metadata']['name']} comes too late"
