"""docs/ is executed: every console session runs against the local stack and must print what the
doc shows; every included file must be the file itself; names and versions must match the stack."""

from __future__ import annotations

import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from devstack.docs import Command, commands, includes, output_matches
from devstack.runfile import load_run_file, load_store_ports
from devstack.stack import DEMO_DAPR_API_TOKEN, DEMO_JWT_SECRET, REPO_ROOT, RUN_FILE, Stack
from eshop_common.auth import mint_token

DOCS = [*sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "README.md"]
DOCS_WITH_COMMANDS = [doc for doc in DOCS if commands(doc)]
FIXED_PORTS = load_store_ports(RUN_FILE)
FIXED_PG_PORT, FIXED_REDIS_PORT = FIXED_PORTS.postgres, FIXED_PORTS.redis
LOCAL_DATABASE = f"postgresql://postgres@localhost:{FIXED_PG_PORT}/postgres"
MARK = "@@docs-command-{}@@"

UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
JWT = re.compile(r"\beyJ[\w-]+\.[\w-]+\.[\w-]+")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?")


def normalise(text: str, users: dict[str, str]) -> list[str]:
    for name, real in users.items():
        text = text.replace(real, name)
    text = JWT.sub("<token>", UUID.sub("<uuid>", TIMESTAMP.sub("<timestamp>", text)))
    lines = [
        re.sub(r"^(date|x-request-id):.*", r"\1: <...>", line, flags=re.I)
        for line in text.splitlines()
    ]
    return [line.rstrip() for line in lines]


def localise(command: str, stack: Stack, users: dict[str, str]) -> str:
    """Point the doc's fixed ports (dapr.yaml's) at the test stack's, its users at fresh ones."""
    fixed = load_run_file(RUN_FILE)
    ports = {}
    for app_id, spec in fixed.items():
        live = stack.apps[app_id]
        ports[spec.app_port] = live.app_port
        ports[spec.dapr_http_port] = live.dapr_http_port
        ports[spec.dapr_grpc_port] = live.dapr_grpc_port
    assert stack.redis_url is not None
    ports[FIXED_REDIS_PORT] = int(stack.redis_url.rsplit(":", 1)[1].split("/")[0])
    for old, new in ports.items():
        command = re.sub(rf"\b(localhost|127\.0\.0\.1):{old}\b", f"127.0.0.1:{new}", command)
        command = re.sub(rf"(-p|--port) {old}\b", rf"\1 {new}", command)
    assert stack.database_url is not None
    live_db = stack.database_url.replace("postgresql+psycopg://", "postgresql://")
    command = command.replace(LOCAL_DATABASE, live_db)
    for name, real in users.items():
        command = re.sub(rf"\b{name}\b", real, command)
    return command


def run_session(cmds: list[Command], stack: Stack, users: dict[str, str]) -> list[str]:
    script = "set +e\n"
    for i, cmd in enumerate(cmds):
        script += f"echo '{MARK.format(i)}'\n{localise(cmd.command, stack, users)}\necho\n"
    env = {
        **os.environ,
        "TOKEN": mint_token(DEMO_JWT_SECRET, users["alice"]),
        "ADMIN_TOKEN": mint_token(DEMO_JWT_SECRET, users["admin"], admin=True),
        "DAPR_API_TOKEN": DEMO_DAPR_API_TOKEN,
        "DATABASE_URL": stack.database_url or "",
        "DAPR_GRPC_PORT": str(stack.apps["basket-api"].dapr_grpc_port),
        "DAPR_HTTP_PORT": str(stack.apps["basket-api"].dapr_http_port),
    }
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    ).stdout
    parts = re.split(r"^@@docs-command-\d+@@\n", out, flags=re.M)[1:]
    assert len(parts) == len(cmds), out
    return parts


STATE_STORE_MARK = re.compile(r"<!-- docs-stack: (redis|postgresql) -->")


@pytest.mark.parametrize("doc", DOCS_WITH_COMMANDS, ids=lambda d: d.name)
def test_every_command_in_the_doc_prints_what_the_doc_shows(doc: Path, stack_factory):
    # A doc about the PostgreSQL state store says so, and runs against a stack that uses it.
    mark = STATE_STORE_MARK.search(doc.read_text())
    stack = stack_factory.get(mark[1] if mark else "redis")
    cmds = commands(doc)
    users = {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("alice", "bob", "admin")}
    outputs = run_session(cmds, stack, users)
    for cmd, out in zip(cmds, outputs, strict=True):
        actual = normalise(out, users)
        while actual and not actual[-1]:
            actual.pop()
        assert output_matches(cmd.expected, actual), (
            f"{doc.name}:{cmd.line}: `{cmd.command}` printed:\n" + "\n".join(actual)
        )


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_every_included_file_is_shown_as_it_is(doc: Path):
    for inc in includes(doc):
        assert inc.content == (REPO_ROOT / inc.path).read_text(), (
            f"{doc.name}:{inc.line} shows an outdated {inc.path}; run `make docs`"
        )


def _versions() -> dict[str, str]:
    text = (REPO_ROOT / "scripts" / "versions.env").read_text()
    return dict(re.findall(r"^(\w+)=(\S+)$", text, flags=re.M))


def test_the_docs_name_only_the_pinned_dapr_version():
    pinned = _versions()["DAPR_VERSION"]
    for doc in DOCS:
        for version in re.findall(
            r"(?:daprd?[: ]v?|daprio/daprd:)(\d+\.\d+\.\d+)", doc.read_text()
        ):
            assert version == pinned, f"{doc.name} names Dapr {version}, the pin is {pinned}"


def test_the_docs_name_only_app_ids_components_and_ports_that_exist():
    apps = load_run_file(RUN_FILE)
    components = {
        doc["metadata"]["name"]
        for path in (REPO_ROOT / "components").glob("*.yaml")
        for doc in yaml.safe_load_all(path.read_text())
        if doc["kind"] == "Component"
    }
    ports = {FIXED_PG_PORT, FIXED_REDIS_PORT}
    ports |= {FIXED_PORTS.otlp, FIXED_PORTS.jaeger_ui, FIXED_PORTS.prometheus}
    for spec in apps.values():
        ports |= {spec.app_port, spec.dapr_http_port, spec.dapr_grpc_port, spec.metrics_port}
    for doc in DOCS:
        text = doc.read_text()
        for port in re.findall(r"(?:localhost|127\.0\.0\.1):(\d+)", text):
            assert int(port) in ports, f"{doc.name} uses port {port}, which the stack does not"
        for name in re.findall(r"/v1\.0/(?:state|publish)/([\w-]+)", text):
            assert name in components, f"{doc.name} names component {name!r}"
        for app_id in re.findall(r"/v1\.0/invoke/([\w-]+)/", text):
            assert app_id in apps, f"{doc.name} names app id {app_id!r}"
        for app_id in re.findall(r"`([a-z]+-api)`", text):
            assert app_id in apps, f"{doc.name} names app id {app_id!r}"


def test_every_picture_in_the_docs_has_its_source_in_the_repo():
    for doc in DOCS:
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", doc.read_text()):
            assert (doc.parent / target).exists(), f"{doc.name} shows a missing picture {target}"
            assert "screenshots/" in target, (
                f"{doc.name}: pictures are Mermaid in the Markdown, or screenshots the tests take"
            )
