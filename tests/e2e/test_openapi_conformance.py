"""The OpenAPI documents tell the truth: schemathesis, all checks, against the running services.

Each API operation gets generated requests that fit its schema and requests that break it
(`generation.mode = all`). Every response must have a declared status, media type and body shape
(errors are `application/problem+json`, RFC 9457 §3); every request the schema refuses must be
refused (4xx), every one it allows must not be (positive_data_acceptance); undeclared methods are
405 with a true `Allow` (RFC 9110 §15.5.6). The stateful tests follow the documents' links
(created item → read; replace or patch with the ETag the last answer gave; delete) and check that
a deleted item stays gone.

The documents come from the services' own code (the same as /openapi.json serves, which
`test_the_served_documents_are_the_ones_tested` checks); the requests go to the running stack,
with tokens minted for the run. Examples are bounded so that the whole module runs in about a
minute; raise OPENAPI_EXAMPLES for a deeper local run.
"""

from __future__ import annotations

import copy
import os
import re
import traceback
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, assume, given, settings
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events
from schemathesis.openapi.checks import RejectedPositiveData

from basket.main import app as basket_app
from catalog.config import Settings as CatalogSettings
from catalog.main import create_catalog_app
from devstack.testkit import unique_user
from eshop_common.auth import mint_token
from eshop_common.conditions import ENTITY_TAGS

EXAMPLES = int(os.environ.get("OPENAPI_EXAMPLES", "15"))
STATEFUL_STEPS = int(os.environ.get("OPENAPI_STATEFUL_STEPS", "10"))
INT32_MAX = 2**31 - 1

CATALOG_DOCUMENT = create_catalog_app(CatalogSettings()).openapi()
BASKET_DOCUMENT = basket_app.openapi()


# A catalog item's PUT and PATCH require If-Match; without it they answer 428 Precondition
# Required, the status RFC 6585 §3 defines for that, which schemathesis's missing-header check
# takes once it is told to.
CATALOG_CHECKS = {
    "missing_required_header": {"expected-statuses": [400, 401, 403, 406, 415, 422, 428]}
}


def _load(
    document: dict[str, Any], checks: dict[str, Any] | None = None
) -> schemathesis.schemas.BaseSchema:
    config = SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "all", "max-examples": EXAMPLES, "database": "none"},
            "checks": checks or {},
        }
    )
    # The event routes are for the apps' own sidecars (a dapr-api-token the run does not have).
    return schemathesis.openapi.from_dict(document, config=config).exclude(path_regex="^/events/")


catalog = _load(CATALOG_DOCUMENT, CATALOG_CHECKS)
basket = _load(BASKET_DOCUMENT)

# Ids that name rows which exist. The schema gives a reference's form; whether it names a brand
# or a product depends on the data, and a well-formed id of nothing is 422 (RFC 9110 §15.5.21).
# Generated ids in range are mapped onto existing ones, so that a schema-valid request is one the
# service can accept; out-of-range or mistyped ids (the negative cases) are left alone.
# The run shares the stack with other tests, so it changes and deletes only catalog items it
# created itself, orders only products of its own, and deletes what it created when it ends.
EXISTING: dict[str, list[int]] = {}
CREATED: list[int] = []
CATALOG_URL: list[str] = []  # set by own_catalog_items, read by the before_call hook
ADMIN: list[dict[str, str]] = []  # the same
REFERENCES = {"catalogBrandId": "brands", "catalogTypeId": "types", "productId": "products"}


def _is_id(value: Any, *, in_path: bool = False) -> bool:
    if in_path and isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    number_like = isinstance(value, int | float) and not isinstance(value, bool)
    return number_like and value == int(value) and 1 <= value <= INT32_MAX


def _existing(kind: str, value: Any) -> int:
    ids = EXISTING[kind]
    return ids[int(value) % len(ids)]


def _map_references(body: Any) -> Any:
    if isinstance(body, dict):
        for member, kind in REFERENCES.items():
            if _is_id(body.get(member)):
                body[member] = _existing(kind, body[member])
        if isinstance(body.get("items"), list):  # PUT /api/basket: {"items": [{"productId"...}]}
            body["items"] = _map_lines(body["items"])
    return body


def _map_lines(lines: list[Any]) -> list[Any]:
    # One product for each distinct id, so that a list has duplicates exactly when it was
    # generated with them (the service refuses those; see STATE_DEPENDENT_PROBLEMS).
    chosen: dict[Any, int] = {}
    for line in lines:
        if isinstance(line, dict) and _is_id(line.get("productId")):
            original = line["productId"]
            if original not in chosen and len(chosen) < len(EXISTING["products"]):
                chosen[original] = EXISTING["products"][len(chosen)]
            line["productId"] = chosen.get(original, original)
    return lines


@schemathesis.hook("before_call")
def use_own_data(_context: schemathesis.HookContext, case: Any, _kwargs: Any) -> None:
    """Just before each request, whichever phase made it (examples, coverage, fuzzing, links).
    Only ids in range are replaced, by other ids in range: a case stays as valid or as invalid
    as it was generated. (A `before_call` hook can only be global; it tells the APIs by path.)"""
    case.body = _map_references(case.body)
    path = case.path_parameters or {}
    method = case.method.upper()
    item_id = path.get("item_id")
    # Ids above the fixture's last item can only be this run's own (tests run one at a time):
    # left as they are. Testing by CREATED instead would miss an item a link follows before
    # after_call recorded it (schemathesis's ensure_resource_availability check does). Other
    # ids: a PUT or PATCH goes to one of the writable items, a DELETE to an item made for it
    # just now. So no fixture item is ever deleted, and no change lands on an item a DELETE
    # removed: a false 404, which that check reported against the POST a sequence began with
    # (the stateful phase marks such an id as coming from the POST's link).
    if _is_id(item_id, in_path=True) and int(item_id) <= max(EXISTING["writable"]):
        if method == "DELETE":
            path["item_id"] = _throwaway_item()
        elif method in ("PUT", "PATCH"):
            path["item_id"] = _existing("writable", item_id)
    if method in ("PUT", "PATCH") and case.operation.path.startswith("/api/catalog/items/"):
        _name_the_current_version(case, path.get("item_id"))
    if _is_id(path.get("productId"), in_path=True):
        path["productId"] = _existing("products", path["productId"])


def _throwaway_item() -> int:
    with httpx.Client(base_url=CATALOG_URL[0], headers=ADMIN[0], timeout=30) as admin:
        return _new_item(admin, unique_user("openapi-throwaway"))


def _name_the_current_version(case: Any, item_id: Any) -> None:
    """A well-formed If-Match names some version; which version an item is at is state, which the
    schema cannot know (RFC 9110 §13.1.1: any other is 412). So a well-formed one is replaced by
    the item's current ETag, read just before: a valid change is then one the service can accept.
    A malformed one (the negative case, 400) and a missing one (428) are left as they are."""
    headers = case.headers or {}
    value = headers.get("If-Match")
    if not isinstance(value, str) or not re.search(ENTITY_TAGS, value):
        return
    if not _is_id(item_id, in_path=True):
        return
    read = httpx.get(f"{CATALOG_URL[0]}/api/catalog/items/{item_id}", timeout=30)
    if read.status_code == 200:
        headers["If-Match"] = read.headers["etag"]


def remember_created_items(_context: schemathesis.HookContext, case: Any, response: Any) -> None:
    if case.method.upper() == "POST" and response.status_code == 201:
        CREATED.append(response.json()["id"])


# What a schema cannot say: whether a valid write fits the basket's current state (checking out
# an empty basket, going past 99 of a product or the configured number of lines, an If-Match the
# basket is no longer at: RFC 9110 §13.1.1, 412, an Idempotency-Key already used for another
# request: draft-ietf-httpapi-idempotency-key-header §2.7 "Error Scenarios", 422), and that a
# product appears once in a list (JSON Schema's uniqueItems compares whole lines, not their
# productId). Only these refusals are let through positive_data_acceptance; every other check
# stays as it is.
STATE_DEPENDENT_PROBLEMS = {
    "/problems/empty-basket",
    "/problems/basket-limit",
    "/problems/idempotency-key-reused",
}
DUPLICATE_LINE = {"field": "items", "in": "body", "message": "duplicate productId"}


def keep_failures_of_form(_context: Any, failure: Any, case: Any, response: Any) -> bool:
    if not isinstance(failure, RejectedPositiveData):
        return True
    if response.status_code == 412:
        return False
    try:
        problem = response.json()
    except ValueError:
        return True
    if not isinstance(problem, dict):
        return True
    return not (
        problem.get("type") in STATE_DEPENDENT_PROBLEMS or problem.get("errors") == [DUPLICATE_LINE]
    )


catalog.hook("after_call")(remember_created_items)
basket.hook("filter_failure")(keep_failures_of_form)


def _new_item(admin: httpx.Client, name: str) -> int:
    resp = admin.post(
        "/api/catalog/items",
        json={
            "name": name,
            "price": 1.5,
            "catalogBrandId": EXISTING["brands"][0],
            "catalogTypeId": EXISTING["types"][0],
            "availableStock": INT32_MAX,
        },
    )
    assert resp.status_code == 201, resp.text
    item_id: int = resp.json()["id"]
    CREATED.append(item_id)
    return item_id


@pytest.fixture(scope="module", autouse=True)
def own_catalog_items(target, admin_headers) -> Iterator[None]:
    CATALOG_URL[:] = [target.catalog_url]
    ADMIN[:] = [admin_headers]
    with httpx.Client(base_url=target.catalog_url, headers=admin_headers, timeout=30) as admin:
        EXISTING["brands"] = [row["id"] for row in admin.get("/api/catalog/brands").json()]
        EXISTING["types"] = [row["id"] for row in admin.get("/api/catalog/types").json()]
        run = unique_user("openapi-run")
        # More than a basket's 50 lines, so that every list of distinct ids maps to distinct ones.
        EXISTING["products"] = [_new_item(admin, f"{run} product {i}") for i in range(60)]
        EXISTING["writable"] = [_new_item(admin, f"{run} writable {i}") for i in range(3)]
        yield
        for item_id in CREATED:
            admin.delete(f"/api/catalog/items/{item_id}")
        CREATED.clear()


@pytest.fixture(scope="module")
def admin_headers(target) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(target.jwt_secret, 'openapi-admin', admin=True)}"}


@pytest.fixture(scope="module")
def buyer_headers(target) -> dict[str, str]:
    buyer = unique_user("openapi")
    headers = {"Authorization": f"Bearer {mint_token(target.jwt_secret, buyer)}"}
    return headers


def test_the_served_documents_are_the_ones_tested(target):
    assert httpx.get(f"{target.catalog_url}/openapi.json").json() == CATALOG_DOCUMENT
    assert httpx.get(f"{target.basket_url}/openapi.json").json() == BASKET_DOCUMENT


def sent_as_generated(case: Any) -> bool:
    """Whether the request on the wire is the one generated. A query value that is an empty
    list or object (a generated schema violation) is sent as nothing at all, so the request the
    service gets is a valid one, and a 200 for it is right; such examples are left out."""
    return not any(value in ([], {}) for value in (case.query or {}).values())


@catalog.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_the_catalog_api_does_what_its_document_says(case, target, admin_headers):
    assume(sent_as_generated(case))
    case.call_and_validate(base_url=target.catalog_url, headers=admin_headers)


@basket.parametrize()
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_the_basket_api_does_what_its_document_says(case, target, buyer_headers):
    assume(sent_as_generated(case))
    case.call_and_validate(base_url=target.basket_url, headers=buyer_headers)


def _run_sequences(
    document: dict[str, Any],
    base_url: str,
    headers: dict[str, str],
    checks: dict[str, Any] | None = None,
    **hooks: Any,
) -> None:
    """Schemathesis's own stateful phase, run as `schemathesis run` runs it: a live service
    answers a replayed sequence with other data (new ids, ETags), which Hypothesis's state
    machine in pytest reports as a flaky strategy; the engine tells that apart from a failure."""
    config = SchemathesisConfig.from_dict(
        {
            "base-url": base_url,
            "headers": headers,
            # Sequences are built from valid requests: a link leads on from a success.
            "generation": {"mode": "positive", "max-examples": EXAMPLES, "database": "none"},
            "phases": {
                "examples": {"enabled": False},
                "coverage": {"enabled": False},
                "fuzzing": {"enabled": False},
                "stateful": {"enabled": True, "max-steps": STATEFUL_STEPS},
            },
            "checks": checks or {},
        }
    )
    schema = schemathesis.openapi.from_dict(document, config=config).exclude(path_regex="^/events/")
    for name, hook in hooks.items():
        schema.hook(name)(hook)
    problems: list[str] = []
    scenarios = 0
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            scenarios += 1
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.status == Status.FAILURE:
                        steps = [
                            f"{c.method} {c.formatted_path}"
                            for c in event.recorder.find_related(case_id=case_id)
                        ]
                        problems.append(f"{check.name}: {check.failure_info} after {steps}")
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"error: {event}")
    assert scenarios > 0
    assert not problems, "\n".join(problems)


def test_catalog_sequences_follow_the_links(target, admin_headers):
    _run_sequences(
        CATALOG_DOCUMENT,
        target.catalog_url,
        admin_headers,
        CATALOG_CHECKS,
        after_call=remember_created_items,
    )


def test_basket_sequences_follow_the_links(target, buyer_headers):
    _run_sequences(
        BASKET_DOCUMENT, target.basket_url, buyer_headers, filter_failure=keep_failures_of_form
    )


def test_control_a_document_that_promises_too_much_is_caught(target, admin_headers):
    """Without the pictures' enum the catalog's document would allow any file name that fits the
    pattern, which the service refuses (422). The same checks must find that lie."""
    document = copy.deepcopy(CATALOG_DOCUMENT)
    for model in ("ItemCreate", "ItemUpdate", "ItemPatch"):
        member = document["components"]["schemas"][model]["properties"]["pictureFileName"]
        for choice in member["anyOf"]:
            choice.pop("enum", None)
    lying = _load(document, CATALOG_CHECKS)
    lying.hook("after_call")(remember_created_items)
    operation = lying["/api/catalog/items"]["POST"]

    @given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    @settings(
        max_examples=50,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        phases=[Phase.generate],
    )
    def create(case: Any) -> None:
        case.call_and_validate(base_url=target.catalog_url, headers=admin_headers)

    with pytest.raises(BaseExceptionGroup) as failure:
        create()
    report = "".join(traceback.format_exception(failure.value))
    assert "Schema-valid request rejected" in report
    assert "no picture named" in report
