"""deploy/k8s rendered and read offline: kustomize (built from its pinned Go module by
scripts/install-kustomize) renders every overlay, and the Dapr CRDs and injector source come from
the pinned Dapr module the daprd build downloaded. No cluster is needed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "k8s"
OVERLAYS = sorted(path.name for path in (DEPLOY / "overlays").iterdir() if path.is_dir())
# ${VAR}, ${VAR:-default}, ${VAR-default}, as compose interpolates them.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")

Object = dict[str, Any]


def pinned(name: str) -> str:
    text = (REPO / "scripts" / "versions.env").read_text()
    match = re.search(rf"^{name}=(\S+)$", text, re.MULTILINE)
    assert match, f"scripts/versions.env has no {name}"
    return match[1]


@functools.cache
def kustomize() -> Path:
    """The pinned kustomize, built on first use (about a minute) and reused from its cache."""
    done = subprocess.run(
        [REPO / "scripts" / "install-kustomize"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"scripts/install-kustomize failed:\n{done.stderr}"
    return Path(done.stdout.strip().splitlines()[-1])


def render(path: Path) -> list[Object]:
    done = subprocess.run([kustomize(), "build", path], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"kustomize build {path.relative_to(REPO)}:\n{done.stderr}"
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@functools.cache
def rendered(overlay: str) -> list[Object]:
    return render(DEPLOY / "overlays" / overlay)


@functools.cache
def dapr_module() -> Path:
    """The pinned Dapr module's directory in Go's module cache (downloaded when daprd was built)."""
    version = pinned("DAPR_VERSION")
    done = subprocess.run(
        ["go", "mod", "download", "-json", f"github.com/dapr/dapr@v{version}"],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert done.returncode == 0, f"go mod download github.com/dapr/dapr@v{version}:\n{done.stderr}"
    info = json.loads(done.stdout)
    assert "Dir" in info, info.get("Error")
    return Path(info["Dir"])


@functools.cache
def dapr_crds() -> dict[tuple[str, str, str], Object]:
    """(group, version, kind) -> the CRD's openAPIV3Schema, from charts/dapr/crds/."""
    schemas = {}
    for path in sorted((dapr_module() / "charts" / "dapr" / "crds").glob("*.yaml")):
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            spec = crd["spec"]
            for version in spec["versions"]:
                key = (spec["group"], version["name"], spec["names"]["kind"])
                schemas[key] = version["schema"]["openAPIV3Schema"]
    return schemas


@functools.cache
def compose() -> Object:
    """docker-compose.yml as compose sees it with no .env."""

    def defaults(node: Any) -> Any:
        if isinstance(node, dict):
            return {key: defaults(value) for key, value in node.items()}
        if isinstance(node, list):
            return [defaults(value) for value in node]
        if isinstance(node, str):
            return INTERPOLATION.sub(lambda m: m["default"] or "", node).replace("$$", "$")
        return node

    doc: Object = defaults(yaml.safe_load((REPO / "docker-compose.yml").read_text()))
    return doc


def of_kind(objects: list[Object], kind: str) -> dict[str, Object]:
    return {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == kind}


def pod_specs(objects: list[Object]) -> Iterator[tuple[Object, Object]]:
    """(workload, pod spec) of every object that runs pods."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield obj, obj["spec"]["template"]["spec"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        elif obj["kind"] == "Pod":
            yield obj, obj["spec"]


def dapr_apps(objects: list[Object]) -> dict[str, Object]:
    """app id -> the Deployment whose pods get a Dapr sidecar."""
    apps = {}
    for obj in of_kind(objects, "Deployment").values():
        annotations = obj["spec"]["template"]["metadata"].get("annotations", {})
        if annotations.get("dapr.io/enabled") == "true":
            apps[annotations["dapr.io/app-id"]] = obj
    return apps


def env_of(container: Object) -> dict[str, Object]:
    return {item["name"]: item for item in container.get("env", [])}


INJECT_SOURCE = Path(__file__).resolve().parent / "inject" / "main.go"


@functools.cache
def dapr_inject() -> Path:
    """inject/main.go built against the pinned Dapr module, cached by Dapr version and source.

    It is built in a module of its own whose go.mod is Dapr's (the same requirements and replace
    directives, so the same dependency versions daprd was built with) plus Dapr itself.
    """
    version = pinned("DAPR_VERSION")
    source = INJECT_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "eshop-dapr"
    target = cache / f"dapr-inject-{version}-{digest}" / "inject"
    if target.exists():
        return target
    module = dapr_module()
    with tempfile.TemporaryDirectory(prefix="dapr-inject-") as build:
        go_mod = (module / "go.mod").read_text()
        go_mod = go_mod.replace("module github.com/dapr/dapr", "module eshop.local/inject", 1)
        go_mod += f"\nrequire github.com/dapr/dapr v{version}\n"
        Path(build, "go.mod").write_text(go_mod)
        Path(build, "go.sum").write_text((module / "go.sum").read_text())
        Path(build, "main.go").write_bytes(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["go", "build", "-trimpath", "-o", f"{target}.tmp", "."],
            cwd=build,
            env={**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, f"building {INJECT_SOURCE.name}:\n{done.stderr}"
    Path(f"{target}.tmp").rename(target)
    return target


def inject(pod: Object, *, drop_all: bool = True) -> Object:
    """The pod as the pinned Dapr sidecar injector patches it (see inject/main.go)."""
    done = subprocess.run(
        [dapr_inject(), f"-drop-all={str(drop_all).lower()}"],
        input=json.dumps(pod),
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    patched: Object = json.loads(done.stdout)
    return patched


def pod_of(workload: Object) -> Object:
    """The Pod a Deployment, StatefulSet or Job creates, as the injector's webhook receives it."""
    template = workload["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template["metadata"], "namespace": workload["metadata"]["namespace"]},
        "spec": template["spec"],
    }
