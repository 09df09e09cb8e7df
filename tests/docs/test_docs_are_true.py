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


# -- no claim about "the state store" where Redis and PostgreSQL differ ---------------------------
#
# The behaviours below differ between the two state stores this sample runs on (docs/05 and
# docs/07 set them side by side, measured by `devstack store-semantics`). A block of text (a
# paragraph, a list, a table) that names one of them must say what each store does: it names both
# Redis and PostgreSQL, or says that a statement holds for both. Behaviours that the basket API
# has too (its own ETags, deletes and outages), and transactions, which the catalog has too, count
# only in a block that speaks of the store, the sidecar or the state API. A chapter about one store
# (its title names only that one) is about that store throughout.

STORES = ("Redis", "PostgreSQL")
GENERIC_SUBJECT = re.compile(
    r"\b(state store|the store|stores?|sidecar|state API|Dapr|component)\b"
)
BOTH_STORES = re.compile(r"\b(both|either|each) (of the )?(two )?stores?\b", re.I)
_ETAG_WRITE = r"(under|names?|naming|with) an? (stale )?ETag|\bIf-Match\b|\"etag\""
_NO_ENTRY = (
    r"\bno (such )?(key|entry)\b|there is no entry|missing key|(key|entry) that (does not|doesn't)"
    r" exist|\b(never|not yet) (been )?saved\b|a key it does not hold"
)


def _all_of(*patterns: str) -> re.Pattern[str]:
    return re.compile("".join(f"(?=.*(?:{p}))" for p in patterns), re.I | re.S)


# Behaviour -> (the words that name it, whether it counts only where the store is the subject).
DIFFERING_BEHAVIOURS: dict[str, tuple[re.Pattern[str], bool]] = {
    "a write under an ETag for a key with no entry": (_all_of(_ETAG_WRITE, _NO_ENTRY), True),
    "what a save under an ETag accepts": (_all_of(r"ETag", r"succeeds? only if"), False),
    "a save without an ETag over an existing entry": (
        _all_of(
            r"\blast-write\b|without an ETag|\bno ETag\b|\bblind", r"\boverwrit|replaces? whatever"
        ),
        False,
    ),
    "the ETag semantics as a whole": (
        re.compile(r"\bETag semantics\b|ETags? (behave|work) the same", re.I),
        False,
    ),
    "an ETag the store could not have made": (
        re.compile(r"not-a-version|non-numeric ETag|ETag[^.]*not an? (number|UUID)", re.I),
        False,
    ),
    "a key deleted and saved again": (
        _all_of(
            r"\b(delet\w*|expir\w*)",
            r"\b(saved|created) again\b|starts? again at\b|\brecreat\w*|created after",
        ),
        True,
    ),
    "what a transaction undoes": (
        _all_of(r"\btransactions?\b", r"roll\w* back|\brollback|all or nothing|\batomic"),
        True,
    ),
    "what consistency: strong does": (
        _all_of(r"\bstrong\b", r"\breplicas?\b|\bWAIT\b|newest|up-to-date|failover"),
        False,
    ),
    "how a store reports an outage": (
        _all_of(
            r"\b(down|stopped|outage|unreachable|connection refused)\b", r"\b409\b|ETag mismatch"
        ),
        True,
    ),
}


def _blocks_of_prose(text: str) -> list[str]:
    """Paragraphs, lists and tables, without fenced blocks and HTML comments."""
    text = re.sub(r"^```.*?^```\s*$", "", text, flags=re.M | re.S)
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return [block for block in re.split(r"\n\s*\n", text) if block.strip()]


def _sentences(block: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n(?=\s*[-|*]|\s*\d+\.)", block) if s.strip()]


def generic_store_claims(text: str) -> list[tuple[str, str]]:
    """(behaviour, sentence) for each sentence that names a behaviour on which the stores differ
    in a block that speaks of the store in general and does not say what each store does."""
    title = next((line for line in text.splitlines() if line.startswith("# ")), "")
    if sum(store in title for store in STORES) == 1:
        return []
    found = []
    for block in _blocks_of_prose(text):
        if all(store in block for store in STORES) or BOTH_STORES.search(block):
            continue
        about_the_store = bool(GENERIC_SUBJECT.search(block))
        for sentence in _sentences(block):
            for behaviour, (pattern, needs_subject) in DIFFERING_BEHAVIOURS.items():
                if pattern.search(sentence) and (about_the_store or not needs_subject):
                    found.append((behaviour, " ".join(sentence.split())))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_no_chapter_says_what_the_state_store_does_where_the_stores_differ(doc: Path):
    claims = generic_store_claims(doc.read_text())
    assert not claims, f"{doc.name} speaks of the state store in general where Redis and " + (
        "PostgreSQL differ; say what each does:\n"
        + "\n".join(f"  [{behaviour}] {sentence}" for behaviour, sentence in claims)
    )


# Claims this walkthrough once made about "the state store", each false on one of the stores.
GENERIC_CLAIMS = [
    "- With `last-write` (the default), or without an ETag, the save overwrites whatever is"
    " there.\n- The sidecar answers 409 otherwise.",
    "The key prefix, the ETag semantics, `first-write`, TTLs and the HTTP API are the same.",
    "Each state call says how consistent it must be: a `strong` write waits until the replicas"
    " have it (Redis `WAIT`) and a `strong` read sees the newest write.",
    "With first-write and an `etag`, the save succeeds only if the entry is still at that"
    " version; otherwise the sidecar answers 409.",
    "A state transaction is atomic: the store rolls every operation back when one fails.",
    "The sidecar's delete with `If-Match` on a key with no entry is refused.",
]
# The same behaviours said store by store, or for a store-specific chapter.
STORE_BY_STORE = [
    "The sidecar passes it on. On Redis a save under an ETag for a key with no entry creates it;"
    " PostgreSQL answers 409.",
    "A transaction on the store rolls back on PostgreSQL, and not on Redis.",
    "# 3. Inside Redis\n\nThe store's counter starts again at 1 when a key is deleted and saved"
    " again.",
    "Both stores refuse a save under a stale ETag, and the sidecar answers 409 on either.",
]


@pytest.mark.parametrize("text", GENERIC_CLAIMS)
def test_the_control_a_generic_claim_where_the_stores_differ_is_found(text: str):
    assert generic_store_claims(text)


@pytest.mark.parametrize("text", STORE_BY_STORE)
def test_a_claim_made_store_by_store_passes(text: str):
    assert not generic_store_claims(text)
