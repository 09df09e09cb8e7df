import os

pytest_plugins = ["devstack.pytest_plugin"]

# tests/compose_stack drives a running `docker compose` stack: `make compose-test` starts one,
# sets E2E_COMPOSE_PROJECT and runs them. Without a stack there is nothing for them to drive.
collect_ignore = [] if os.environ.get("E2E_COMPOSE_PROJECT") else ["tests/compose_stack"]
