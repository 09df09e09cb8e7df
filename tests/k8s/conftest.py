"""Fixtures over the rendered overlays; the helpers live in k8s_manifests.py beside this file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The test modules here import their helpers as `k8s_manifests` (pytest runs with
# --import-mode=importlib, which puts no test directory on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parent))

from k8s_manifests import OVERLAYS, Object, rendered

HERE = Path(__file__).resolve().parent
# The first test to render or inject builds kustomize or the injector from Go modules: about a
# minute each on a quiet machine, several on a busy one. Don't let the suite's 300 s cut it off.
BUILD_TIMEOUT = 1200


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.timeout(BUILD_TIMEOUT))


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def objects(overlay: str) -> list[Object]:
    return rendered(overlay)
