"""The pods as the cluster runs them: each Deployment's pod put through the pinned Dapr sidecar
injector's own patch code (inject/main.go), configured as docs/10-kubernetes.md installs the
control plane. The injected pod is valid for the pinned Kubernetes version, its sidecar is the
one the annotations ask for, and it passes the `restricted` Pod Security Standard the namespace
enforces. The control: with the chart's default (capabilities not dropped) the API server would
refuse it, which is why the docs' install command sets sidecarDropALLCapabilities.
"""

from __future__ import annotations

import kubernetes_validate
from k8s_manifests import Object, dapr_apps, env_of, inject, pinned, pod_of, rendered

# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (restricted, v1.33)
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: Object) -> list[str]:
    """What the `restricted` Pod Security Standard refuses in this pod."""
    spec = pod["spec"]
    pod_security = spec.get("securityContext", {})
    found = []
    if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
        found.append("host namespaces")
    for volume in spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            found.append(f"volume {volume['name']}: {kinds}")
    for container in spec.get("initContainers", []) + spec["containers"]:
        name = container["name"]
        security = container.get("securityContext", {})

        def setting(key: str, security: Object = security) -> object:
            return security.get(key, pod_security.get(key))

        if security.get("privileged"):
            found.append(f"{name}: privileged")
        if security.get("allowPrivilegeEscalation") is not False:
            found.append(f"{name}: allowPrivilegeEscalation is not false")
        capabilities = security.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            found.append(f"{name}: capabilities not dropped")
        if set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
            found.append(f"{name}: adds capabilities")
        if setting("runAsNonRoot") is not True:
            found.append(f"{name}: runAsNonRoot is not true")
        if setting("runAsUser") == 0:
            found.append(f"{name}: runs as root")
        seccomp = setting("seccompProfile")
        if not isinstance(seccomp, dict) or seccomp.get("type") not in (
            "RuntimeDefault",
            "Localhost",
        ):
            found.append(f"{name}: no RuntimeDefault seccomp profile")
        for port in container.get("ports", []):
            if port.get("hostPort"):
                found.append(f"{name}: host port")
    return found


def injected(overlay: str, drop_all: bool = True) -> dict[str, Object]:
    return {
        app_id: inject(pod_of(deployment), drop_all=drop_all)
        for app_id, deployment in dapr_apps(rendered(overlay)).items()
    }


def daprd(pod: Object) -> Object:
    (sidecar,) = [c for c in pod["spec"]["containers"] if c["name"] == "daprd"]
    return sidecar


def flag(container: Object, name: str) -> str:
    args: list[str] = container["args"]
    return args[args.index(name) + 1]


def test_every_app_gets_the_pinned_sidecar_as_annotated(overlay: str) -> None:
    for app_id, pod in injected(overlay).items():
        annotations = pod["metadata"]["annotations"]
        sidecar = daprd(pod)
        assert [c["name"] for c in pod["spec"]["containers"]] == [app_id, "daprd"]
        assert sidecar["image"] == f"daprio/daprd:{pinned('DAPR_VERSION')}"
        assert flag(sidecar, "--app-id") == app_id
        assert flag(sidecar, "--app-port") == annotations["dapr.io/app-port"]
        assert flag(sidecar, "--config") == annotations["dapr.io/config"]
        assert "--enable-mtls" in sidecar["args"]
        assert flag(sidecar, "--app-health-check-path") == "/healthz"
        assert sidecar["resources"] == {
            "requests": {
                "cpu": annotations["dapr.io/sidecar-cpu-request"],
                "memory": annotations["dapr.io/sidecar-memory-request"],
            },
            "limits": {
                "cpu": annotations["dapr.io/sidecar-cpu-limit"],
                "memory": annotations["dapr.io/sidecar-memory-limit"],
            },
        }
        for name, secret in (
            ("DAPR_API_TOKEN", "dapr.io/api-token-secret"),
            ("APP_API_TOKEN", "dapr.io/app-token-secret"),
        ):
            ref = env_of(sidecar)[name]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": annotations[secret], "key": "token"}
            # The app reads the same Secret, so it and its sidecar agree on the token.
            app_ref = env_of(pod["spec"]["containers"][0])[name]["valueFrom"]["secretKeyRef"]
            assert app_ref == ref
        # The injector leaves the app's DAPR_HTTP_PORT alone, and it is the sidecar's port.
        app_env = env_of(pod["spec"]["containers"][0])
        assert app_env["DAPR_HTTP_PORT"]["value"] == flag(sidecar, "--dapr-http-port")


def test_every_injected_pod_is_valid_and_meets_the_restricted_standard(overlay: str) -> None:
    for app_id, pod in injected(overlay).items():
        kubernetes_validate.validate(pod, pinned("KUBERNETES_VERSION"), strict=True)
        assert restricted_violations(pod) == [], app_id


def test_control_with_the_charts_default_the_namespace_would_refuse_the_pods() -> None:
    for app_id, pod in injected("local", drop_all=False).items():
        assert restricted_violations(pod) == ["daprd: capabilities not dropped"], app_id
