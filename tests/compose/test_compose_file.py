"""The compose demo checked without Docker: docker-compose parses it, the Compose Specification's
schema accepts it, and it runs the same apps, ports and sidecar flags as the local stack
(dapr.yaml, components/, scripts/versions.env). Nothing is built or started.

What running the stack proves (healthchecks, start-up order, volumes, service names that
resolve) is left to `make compose-test` (tests/compose_stack); these catch the drift a run
cannot see: versions, ports and names shared with dapr.yaml, pins, users.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from devstack.runfile import AppSpec, load_run_file
from devstack.stack import DEMO_APP_API_TOKEN, DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPONENTS_IN_CONTAINER = Path("/components")
DEBUG_PROFILE = "debug"
# ${VAR}, ${VAR:-default}, ${VAR-default}; `$$` is a literal dollar.
INTERPOLATION = re.compile(r"(?<!\$)\$\{(?P<name>\w+)(?::?-(?P<default>[^}]*))?\}")

APPS: dict[str, AppSpec] = load_run_file(REPO / "dapr.yaml")


# -- reading the files --------------------------------------------------------------------------
@functools.cache
def raw_compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return doc


def with_defaults(node: Any) -> Any:
    """The file as compose sees it with no .env and a clean environment."""
    if isinstance(node, dict):
        return {key: with_defaults(value) for key, value in node.items()}
    if isinstance(node, list):
        return [with_defaults(value) for value in node]
    if isinstance(node, str):

        def default(match: re.Match[str]) -> str:
            assert match["default"] is not None, f"${{{match['name']}}} has no default"
            return match["default"]

        return INTERPOLATION.sub(default, node).replace("$$", "$")
    return node


@functools.cache
def compose() -> dict[str, Any]:
    doc: dict[str, Any] = with_defaults(raw_compose())
    return doc


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def environment(service: str) -> dict[str, str]:
    env = services()[service].get("environment", {})
    assert isinstance(env, dict), f"{service}: write environment as a mapping"
    return {key: str(value) for key, value in env.items()}


def in_debug_profile(service: str) -> bool:
    return DEBUG_PROFILE in services()[service].get("profiles", [])


def published_ports(service: str) -> list[str]:
    return [str(port) for port in services()[service].get("ports", [])]


def image_is_pinned(image: str) -> bool:
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and tag not in ("", "latest")


def dapr_version() -> str:
    text = (REPO / "scripts" / "versions.env").read_text()
    match = re.search(r"^DAPR_VERSION=(\S+)$", text, re.MULTILINE)
    assert match, "scripts/versions.env has no DAPR_VERSION"
    return match[1]


def env_example() -> dict[str, str]:
    pairs = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolated_defaults() -> dict[str, set[str | None]]:
    found: dict[str, set[str | None]] = {}
    for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text()):
        found.setdefault(match["name"], set()).add(match["default"])
    return found


@dataclass
class Component:
    path: Path
    env_refs: set[str]
    scopes: list[str]


def components() -> list[Component]:
    """Component files as daprd reads --resources-path: the directory's own files, not below."""
    found = []
    for path in sorted((REPO / "components").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Component":
                metadata = doc.get("spec", {}).get("metadata", [])
                refs = {item["envRef"] for item in metadata if "envRef" in item}
                found.append(Component(path, refs, doc.get("scopes") or list(APPS)))
    return found


def config_env_vars() -> set[str]:
    """${VARS} in the sidecar Configuration, which daprd expands from its environment."""
    config = next(iter(APPS.values())).config_file

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        if isinstance(node, list):
            return [s for value in node for s in strings(value)]
        return [node] if isinstance(node, str) else []

    return {
        name
        for value in strings(yaml.safe_load(config.read_text()))
        for name in re.findall(r"\$\{(\w+)\}", value)
    }


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, instruction: str) -> list[str]:
        return [rest for kind, rest in self.instructions if kind == instruction]


@dataclass
class Dockerfile:
    path: Path
    global_args: dict[str, str]
    stages: list[Stage]

    def resolve(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m[1], m[0]), text)

    @property
    def runtime(self) -> Stage:
        return self.stages[-1]

    def all(self, instruction: str) -> list[str]:
        return [rest for stage in self.stages for rest in stage.args(instruction)]


def parse_dockerfile(path: Path) -> Dockerfile:
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        rest = " ".join(rest.split())
        if instruction == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages and instruction == "ARG":
            key, _, value = rest.partition("=")
            global_args[key] = value
        else:
            stages[-1].instructions.append((instruction, rest))
    return Dockerfile(path, global_args, stages)


def dockerfile_of(app_id: str) -> Dockerfile:
    build = services()[app_id]["build"]
    return parse_dockerfile(REPO / build["context"] / build["dockerfile"])


def dockerfiles() -> list[Path]:
    return sorted(REPO.glob("services/**/Dockerfile"))


def build_args(app_id: str) -> dict[str, str]:
    return {key: str(value) for key, value in services()[app_id]["build"]["args"].items()}


def docker_compose_command() -> list[str]:
    if path := shutil.which("docker-compose"):
        return [path]
    if (path := shutil.which("docker")) and subprocess.run(
        [path, "compose", "version"], capture_output=True, check=False
    ).returncode == 0:
        return [path, "compose"]
    pytest.fail("neither docker-compose nor `docker compose` found: `make prerequisites`")


def run_compose_config(compose_file: Path, env_file: Path) -> subprocess.CompletedProcess[str]:
    # A clean environment and an empty env file: the defaults in the file must be enough.
    return subprocess.run(
        [*docker_compose_command(), "--project-directory", str(REPO), "--env-file", str(env_file),
         "-f", str(compose_file), "config", "-q"],
        cwd=REPO, env={"PATH": os.environ["PATH"]}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip


def compose_spec_schema() -> dict[str, Any]:
    """The Compose Specification schema that docker-compose (the Python one) ships and uses."""
    script = shutil.which("docker-compose")
    assert script, "docker-compose not found: `make prerequisites` installs it"
    interpreter = Path(script).read_bytes()[:200].split(b"\n", 1)[0].removeprefix(b"#!").strip()
    assert interpreter, f"{script} is not a Python script; its schema cannot be found"
    found = subprocess.run(
        [*interpreter.decode().split(), "-c",
         "import compose.config, pathlib; "
         "print(pathlib.Path(compose.config.__file__).with_name('compose_spec.json'))"],
        env={"PATH": os.environ["PATH"]}, capture_output=True, text=True, check=True,
    )  # fmt: skip
    schema: dict[str, Any] = json.loads(Path(found.stdout.strip()).read_text())
    return schema


def schema_errors(doc: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft201909Validator(compose_spec_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    ]


# -- the file is valid --------------------------------------------------------------------------
def test_docker_compose_accepts_the_file_with_no_env_file_and_a_clean_environment(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty.env"
    empty.touch()
    result = run_compose_config(COMPOSE_FILE, empty)
    assert result.returncode == 0, result.stderr


def test_the_file_follows_the_compose_specification_schema() -> None:
    assert schema_errors(raw_compose()) == []


def test_the_schema_check_rejects_a_misspelled_key() -> None:
    doc = json.loads(json.dumps(raw_compose()))
    doc["services"]["redis"]["depend_on"] = doc["services"]["redis"].pop("healthcheck")
    assert schema_errors(doc) != []


def test_every_interpolated_variable_has_one_default_so_no_env_file_is_needed() -> None:
    for name, defaults in interpolated_defaults().items():
        assert None not in defaults, f"${{{name}}} is used without a default"
        assert len(defaults) == 1, f"${{{name}}} has different defaults: {defaults}"


def test_the_demo_secrets_are_the_local_stacks_so_make_token_works_against_compose() -> None:
    defaults = {name: next(iter(values)) for name, values in interpolated_defaults().items()}
    assert defaults["JWT_SECRET"] == DEMO_JWT_SECRET
    assert defaults["DAPR_API_TOKEN"] == DEMO_DAPR_API_TOKEN
    assert defaults["APP_API_TOKEN"] == DEMO_APP_API_TOKEN


def test_env_example_lists_every_variable_the_file_reads_with_its_default() -> None:
    defaults = {name: next(iter(values)) for name, values in interpolated_defaults().items()}
    assert env_example() == defaults


# -- the same apps, ports and sidecar flags as dapr.yaml ----------------------------------------
def test_every_app_in_dapr_yaml_has_an_app_service_and_a_sidecar_service() -> None:
    for app_id in APPS:
        assert app_id in services(), f"no service {app_id}"
        assert f"{app_id}-dapr" in services(), f"no sidecar service {app_id}-dapr"


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_sidecar_runs_daprd_with_exactly_the_local_stacks_flags(app_id: str) -> None:
    """All but the metrics listener, which is on the pod's network for Prometheus."""
    spec = APPS[app_id]
    config = COMPONENTS_IN_CONTAINER / spec.config_file.relative_to(spec.resources_path)
    in_pod = replace(spec, config_file=config, metrics_listen_address="0.0.0.0")
    expected = in_pod.daprd_args(COMPONENTS_IN_CONTAINER)
    assert services()[f"{app_id}-dapr"]["command"] == ["./daprd", *expected]


def test_prometheus_scrapes_each_app_and_sidecar_on_its_dapr_yaml_port() -> None:
    config = yaml.safe_load((REPO / "deploy" / "observability" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: {
            target: group["labels"]["app_id"]
            for group in job["static_configs"]
            for target in group["targets"]
        }
        for job in config["scrape_configs"]
    }
    assert jobs["eshop-app"] == {f"{a}-pod:{spec.app_port}": a for a, spec in APPS.items()}
    assert jobs["daprd"] == {f"{a}-pod:{spec.metrics_port}": a for a, spec in APPS.items()}
    mounted = "./deploy/observability/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
    assert mounted in services()["prometheus"]["volumes"]


def test_apps_and_sidecars_send_traces_to_the_jaeger_service_named_after_their_app_id() -> None:
    jaeger = yaml.safe_load((REPO / "deploy" / "observability" / "jaeger.yaml").read_text())
    otlp_port = jaeger["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for app_id in APPS:
        app, sidecar = environment(app_id), environment(f"{app_id}-dapr")
        assert app["OTEL_EXPORTER_OTLP_ENDPOINT"] == f"http://jaeger:{otlp_port}"
        assert app["OTEL_SERVICE_NAME"] == app_id
        assert app["OTEL_SDK_DISABLED"] == "false"
        assert sidecar["DAPR_OTLP_ENDPOINT"] == f"jaeger:{otlp_port}"
        assert sidecar["DAPR_TRACING_SAMPLING_RATE"] == "1"


def test_the_jaeger_image_tag_is_the_version_pinned_in_versions_env() -> None:
    pinned = re.search(
        r"^JAEGER_VERSION=(\S+)$", (REPO / "scripts" / "versions.env").read_text(), re.M
    )
    assert pinned is not None
    assert services()["jaeger"]["image"] == f"jaegertracing/jaeger:{pinned[1]}"


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_app_listens_on_its_dapr_yaml_port_and_finds_its_sidecar_there(app_id: str) -> None:
    spec, env = APPS[app_id], environment(app_id)
    assert env["APP_PORT"] == str(spec.app_port)
    assert env["DAPR_HTTP_PORT"] == str(spec.dapr_http_port)
    assert published_ports(f"{app_id}-pod") == [f"{spec.app_port}:{spec.app_port}"]


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_apps_image_serves_the_dapr_yaml_module_on_the_dapr_yaml_port(app_id: str) -> None:
    spec, dockerfile, args = APPS[app_id], dockerfile_of(app_id), build_args(app_id)
    assert args["APP_MODULE"] == spec.command[-1]
    assert args["APP_PORT"] == str(spec.app_port)
    assert json.loads(dockerfile.runtime.args("CMD")[-1]) == ["serve"]
    env = " ".join(dockerfile.runtime.args("ENV")).split()
    assert {"APP_MODULE=${APP_MODULE}", "APP_PORT=${APP_PORT}", "APP_HOST=0.0.0.0"} <= set(env)
    assert dockerfile.runtime.args("EXPOSE") == ["${APP_PORT}"]


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_apps_image_installs_its_own_workspace_package_from_its_own_sources(
    app_id: str,
) -> None:
    args = build_args(app_id)
    project = REPO / "services" / args["SERVICE"] / "pyproject.toml"
    assert tomllib.loads(project.read_text())["project"]["name"] == args["PACKAGE"]
    assert args["APP_MODULE"].split(".")[0] in {
        path.name for path in (project.parent / "src").iterdir() if path.is_dir()
    }


def test_the_daprd_image_tag_is_the_dapr_version_pinned_in_versions_env() -> None:
    daprd_images = {
        name: service["image"]
        for name, service in services().items()
        if service.get("image", "").startswith("daprio/daprd")
    }
    assert set(daprd_images) == {f"{app_id}-dapr" for app_id in APPS}
    assert set(daprd_images.values()) == {f"daprio/daprd:{dapr_version()}"}


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_app_and_its_sidecar_share_a_namespace_that_neither_of_them_owns(app_id: str) -> None:
    # An app or sidecar that owned the namespace would take it along when it crashed, and its
    # restarted self would come back in a new one, unreachable by the other (a stranded sidecar).
    # Sharing the pod's process namespace too, they end with it and are restarted into its new
    # namespaces, instead of living on in the old network namespace, cut off from the ports.
    pod = services()[f"{app_id}-pod"]
    for name in (app_id, f"{app_id}-dapr"):
        assert services()[name]["network_mode"] == f"service:{app_id}-pod", name
        assert services()[name]["pid"] == f"service:{app_id}-pod", name
        assert services()[name]["restart"] == "unless-stopped", name
    assert pod["command"] == ["sleep", "infinity"]
    assert pod["init"] is True
    assert pod["restart"] == "unless-stopped"


@pytest.mark.parametrize("app_id", list(APPS))
def test_starting_an_app_alone_starts_its_sidecar_so_it_can_become_healthy(app_id: str) -> None:
    depends_on = services()[app_id]["depends_on"]
    assert depends_on[f"{app_id}-dapr"]["condition"] == "service_started"


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_sidecar_mounts_the_components_read_only_where_its_flags_point(app_id: str) -> None:
    assert f"./components:{COMPONENTS_IN_CONTAINER}:ro" in services()[f"{app_id}-dapr"]["volumes"]


def test_each_sidecar_gets_every_variable_its_components_and_configuration_read() -> None:
    needed: dict[str, set[str]] = {app_id: set(config_env_vars()) for app_id in APPS}
    for component in components():
        for app_id in component.scopes:
            needed[app_id] |= component.env_refs
    assert needed["basket-api"] >= {"REDIS_HOST", "REDIS_PASSWORD", "NAME_RESOLUTION_DB"}
    for app_id, names in needed.items():
        env = environment(f"{app_id}-dapr")
        missing = {name for name in names if not env.get(name)}
        assert not missing, f"{app_id}-dapr lacks {missing}"


def test_the_sidecars_share_one_name_resolution_database_on_a_named_volume() -> None:
    paths = {environment(f"{app_id}-dapr")["NAME_RESOLUTION_DB"] for app_id in APPS}
    assert len(paths) == 1
    directory = str(Path(paths.pop()).parent)
    for app_id in APPS:
        mounts = [str(v).split(":") for v in services()[f"{app_id}-dapr"]["volumes"]]
        volume = [source for source, target, *_ in mounts if target == directory]
        assert volume == ["nameresolution"], f"{app_id}-dapr: {directory} is not the shared volume"
    assert "nameresolution" in compose()["volumes"]


def test_no_sidecar_registers_itself_on_loopback() -> None:
    # Each app+sidecar pair has its own network namespace: 127.0.0.1 would point at the caller.
    for app_id in APPS:
        assert "DAPR_HOST_IP" not in environment(f"{app_id}-dapr")


def test_apps_send_the_api_token_their_sidecars_require() -> None:
    for app_id in APPS:
        token = environment(f"{app_id}-dapr")["DAPR_API_TOKEN"]
        assert environment(app_id)["DAPR_API_TOKEN"] == token


def test_both_apps_verify_tokens_with_the_same_jwt_secret() -> None:
    assert len({environment(app_id)["JWT_SECRET"] for app_id in APPS}) == 1


# -- start-up order -----------------------------------------------------------------------------


@pytest.mark.parametrize("app_id", list(APPS))
def test_each_apps_healthcheck_asks_its_own_readyz_with_python(app_id: str) -> None:
    test = services()[app_id]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    assert "urllib" in test[3]
    assert "'APP_PORT'" in test[3]
    assert "/readyz" in test[3]


def test_every_dependency_waits_for_a_condition_its_target_can_report() -> None:
    for name, service in services().items():
        depends_on = service.get("depends_on", {})
        assert isinstance(depends_on, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends_on.items():
            condition = (spec or {}).get("condition")
            healthcheck = services()[target].get("healthcheck", {})
            if condition == "service_healthy":
                message = f"{name} waits for {target} to be healthy; it has no healthcheck"
                assert healthcheck.get("test"), message
                assert not healthcheck.get("disable"), message
            elif condition == "service_completed_successfully":
                assert services()[target].get("restart") == "no", f"{target} is not a one-shot"
            elif condition == "service_started":
                # Only an app waits for its sidecar merely to start: the app's health includes
                # the sidecar's, which has no healthcheck of its own (distroless image).
                assert target == f"{name}-dapr", f"{name} waits only for {target} to start"
                assert service["network_mode"] == services()[target]["network_mode"]
            else:
                pytest.fail(f"{name} depends on {target} without a condition")


def test_an_app_that_another_app_waits_for_is_healthy_only_with_its_sidecar() -> None:
    waited_for = {
        target
        for name in APPS
        for target, spec in services()[name].get("depends_on", {}).items()
        if target in APPS and spec["condition"] == "service_healthy"
    }
    assert waited_for == {"catalog-api"}
    for app_id in waited_for:
        test = " ".join(services()[app_id]["healthcheck"]["test"])
        assert "'DAPR_HTTP_PORT'" in test
        assert "/v1.0/healthz" in test


def test_the_catalog_database_is_prepared_once_before_the_catalog_starts() -> None:
    init, catalog = services()["catalog-db-init"], services()["catalog-api"]
    assert init["command"] == ["catalog-db", "init"]
    assert (init["image"], init["build"]) == (catalog["image"], catalog["build"])
    assert init["environment"]["DATABASE_URL"] == catalog["environment"]["DATABASE_URL"]
    assert init["depends_on"]["postgres"]["condition"] == "service_healthy"
    condition = catalog["depends_on"]["catalog-db-init"]["condition"]
    assert condition == "service_completed_successfully"


def test_the_sidecar_with_a_state_store_waits_for_redis() -> None:
    for component in components():
        if component.env_refs & {"REDIS_HOST"}:
            for app_id in component.scopes:
                depends_on = services()[f"{app_id}-dapr"]["depends_on"]
                assert depends_on["redis"]["condition"] == "service_healthy"


# -- exposure and durability --------------------------------------------------------------------
def test_only_the_apps_are_published_outside_the_debug_profile_and_the_backends_on_loopback() -> (
    None
):
    published = {
        name: ports
        for name in services()
        if not in_debug_profile(name) and (ports := published_ports(name))
    }
    expected = {f"{app_id}-pod": [f"{s.app_port}:{s.app_port}"] for app_id, s in APPS.items()}
    expected["jaeger"] = ["127.0.0.1:16686:16686"]
    expected["prometheus"] = ["127.0.0.1:9090:9090"]
    assert published == expected


def test_the_debug_profile_publishes_only_on_loopback() -> None:
    debug = [name for name in services() if in_debug_profile(name)]
    assert debug, "no service in the debug profile"
    for name in debug:
        for port in published_ports(name):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this machine"


def test_every_image_is_pinned_to_a_tag() -> None:
    for name, service in services().items():
        assert image_is_pinned(service["image"]), f"{name}: {service['image']}"


# -- the Dockerfiles ----------------------------------------------------------------------------
@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_pins_every_image_it_uses(path: Path) -> None:
    dockerfile = parse_dockerfile(path)
    stage_names = {stage.name for stage in dockerfile.stages}
    images = [dockerfile.resolve(stage.base) for stage in dockerfile.stages]
    images += [
        match[1]
        for copy in dockerfile.all("COPY")
        if (match := re.search(r"--from=(\S+)", copy)) and match[1] not in stage_names
    ]
    for image in images:
        assert image in stage_names or image_is_pinned(image), f"{image} is not pinned"


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_builds_and_runs_on_the_same_python_base(path: Path) -> None:
    # The virtual environment's interpreter is a link into the base image's Python.
    dockerfile = parse_dockerfile(path)
    build = next(stage for stage in dockerfile.stages if stage.args("RUN"))
    assert dockerfile.resolve(build.base) == dockerfile.resolve(dockerfile.runtime.base)
    assert dockerfile.resolve(build.base).startswith("python:")


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_runs_the_service_as_a_user_other_than_root(path: Path) -> None:
    users = parse_dockerfile(path).runtime.args("USER")
    assert users, "the runtime stage sets no USER"
    assert users[-1].split(":")[0] not in ("root", "0")


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_installs_only_what_the_lock_file_pins(path: Path) -> None:
    syncs = [run for run in parse_dockerfile(path).all("RUN") if "uv sync" in run]
    assert syncs
    for run in syncs:
        assert "--locked" in run.split(), run
        assert "--no-dev" in run.split(), run


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_copies_every_workspace_members_pyproject_before_the_first_sync(
    path: Path,
) -> None:
    # Without all of them uv cannot check the workspace's lock, and the build fails.
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members = {
        str(member.relative_to(REPO))
        for pattern in root["tool"]["uv"]["workspace"]["members"]
        for member in REPO.glob(pattern)
        if (member / "pyproject.toml").exists()
    }
    stages = parse_dockerfile(path).stages
    build = next(s for s in stages if any("uv sync" in run for run in s.args("RUN"))).instructions
    first_sync = next(i for i, (kind, rest) in enumerate(build) if "uv sync" in rest)
    copied = {rest.split()[0].removesuffix("/pyproject.toml") for _, rest in build[:first_sync]}
    assert members <= copied


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_takes_only_the_virtual_environment_into_the_runtime_image(path: Path) -> None:
    runtime = parse_dockerfile(path).runtime
    copies = runtime.args("COPY") + runtime.args("ADD")
    assert [copy.split()[-2:] for copy in copies] == [["/app/.venv", "/app/.venv"]]
    assert not any("uv" in run.split() or "pip" in run for run in runtime.args("RUN"))


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_uses_the_uv_release_pinned_in_versions_env(path: Path) -> None:
    pinned = re.search(r"^UV_VERSION=(\S+)$", (REPO / "scripts" / "versions.env").read_text(), re.M)
    assert pinned
    assert f"ghcr.io/astral-sh/uv:{pinned[1]}" in path.read_text()


@pytest.mark.parametrize("path", dockerfiles(), ids=lambda p: p.parent.name)
def test_dockerfile_needs_no_frontend_image_from_a_registry(path: Path) -> None:
    # `# syntax=` makes BuildKit pull that frontend image; the built-in one handles RUN --mount.
    assert not re.search(r"^#\s*syntax\s*=", path.read_text(), re.M | re.I)


def test_every_app_is_built_from_the_one_services_dockerfile() -> None:
    built = {name for name, service in services().items() if "build" in service}
    assert built == {*APPS, "catalog-db-init"}
    assert {services()[name]["build"]["dockerfile"] for name in built} == {"services/Dockerfile"}


def test_the_docker_build_context_leaves_out_secrets_local_state_and_caches() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".env", ".git", ".stack", "**/.venv", "**/__pycache__"} <= ignored
    # A Dockerfile-specific ignore file would replace this one for that build (BuildKit).
    assert not list(REPO.glob("services/*/Dockerfile.dockerignore"))
