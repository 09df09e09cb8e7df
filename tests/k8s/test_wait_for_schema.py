"""The catalog's wait-for-schema init container, run as the manifest writes it against a real
PostgreSQL: it keeps waiting while the database is empty and lets the pod start once the
schema is at alembic's head (what the catalog-db-init Job leaves behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

from k8s_manifests import of_kind, rendered

from catalog.db_cli import migrate
from devstack.pytest_plugin import DatabaseServer, new_database


def wait_for_schema_command() -> list[str]:
    deployment = of_kind(rendered("local"), "Deployment")["catalog-api"]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    command: list[str] = init["command"]
    assert command[:2] == ["python", "-c"]
    return [sys.executable, *command[1:]]


def test_the_catalog_waits_for_the_schema_and_starts_once_it_is_at_head(
    postgres_server: DatabaseServer,
) -> None:
    url = new_database(postgres_server, "k8s_wait")
    waiting = subprocess.Popen(
        wait_for_schema_command(),
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert waiting.stdout is not None
        first = waiting.stdout.readline()
        # Control: an empty database does not let the pod start.
        assert first.startswith("waiting for catalog-db-init: schema at None"), first
        time.sleep(3)
        assert waiting.poll() is None, "the init container gave up or passed without a schema"
        migrate(url)
        rest, _ = waiting.communicate(timeout=30)
    finally:
        waiting.kill()
    assert waiting.returncode == 0
    assert rest.splitlines()[-1].startswith("schema at ")
