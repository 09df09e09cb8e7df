import os

pytest_plugins = ["devstack.pytest_plugin"]

# No tracing in the test process: apps that tests build in it would instrument its HTTP clients,
# which would then replace the traceparent a test sends with their own. The stack's processes get
# their settings from the stack (devstack.stack).
os.environ.setdefault("OTEL_SDK_DISABLED", "true")

# tests/compose_stack drives a running `docker compose` stack: `make compose-test` starts one,
# sets E2E_COMPOSE_PROJECT and runs them. Without a stack there is nothing for them to drive.
collect_ignore = [] if os.environ.get("E2E_COMPOSE_PROJECT") else ["tests/compose_stack"]
