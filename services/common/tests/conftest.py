import sys
from pathlib import Path

# The test modules here import the apps they serve as `failing_app` (pytest runs with
# --import-mode=importlib, which puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent))

import pytest

from devstack.stack import Stack
from eshop_common.sidecar import Sidecar


@pytest.fixture
def sidecar(stack: Stack) -> Sidecar:
    """A client to the basket's sidecar, with the stack's API token."""
    return Sidecar(
        stack.dapr_url("basket-api"), owner="test",
        api_token=stack.shared_env["DAPR_API_TOKEN"], timeout_seconds=5,
    )  # fmt: skip
