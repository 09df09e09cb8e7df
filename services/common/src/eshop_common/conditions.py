"""Conditional requests as HTTP defines them (RFC 9110 §13): parse `If-Match` and
`If-None-Match`, then evaluate them against a resource's current entity tag.

Pure functions, no I/O: a service evaluates them on the version it is about to write over (the
basket inside its read-modify-write loop, the catalog on the row it has locked), so a condition
and the write it guards see the same version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from eshop_common.problems import BadRequest, PreconditionFailed, PreconditionRequired

# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; weak = %s"W/";
# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (%x80-FF).
ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
OWS = " \t"
ANY: Literal["*"] = "*"
# What an OpenAPI document says If-Match and If-None-Match take (RFC 9110 §8.8.3, §13.1.1): `*`,
# or a comma-separated list of entity-tags, in which empty elements (and so an empty list) are
# allowed (§5.6.1). `parse_tag_list` is the judge: 400.
_TAG = r'((W/)?"[\x21\x23-\x7e]*")?'
ENTITY_TAGS = rf"^[ \t]*(\*|{_TAG}([ \t]*,[ \t]*{_TAG})*)[ \t]*$"


class MalformedPrecondition(BadRequest):
    type = "/problems/malformed-precondition"


class ConditionFailed(PreconditionFailed):
    type = "/problems/precondition-failed"


class ConditionRequired(PreconditionRequired):
    type = "/problems/precondition-required"


@dataclass(frozen=True, slots=True)
class EntityTag:
    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'


def strong_etag(opaque: str) -> str:
    """The `ETag` field value of a strong validator (RFC 9110 §8.8.3): the opaque-tag quoted."""
    return str(EntityTag(opaque))


TagList = tuple[EntityTag, ...] | Literal["*"]


def parse_tag_list(header: str, values: list[str]) -> TagList | None:
    """`If-Match` / `If-None-Match` field lines -> `"*"`, a tuple of tags, or None when absent.

    Several field lines are one comma-separated list (RFC 9110 §5.3); empty list elements are
    ignored (§5.6.1). `"*"` must stand alone. Raises MalformedPrecondition (400) for anything
    the grammar does not allow, such as an unquoted tag (`0`) or a stray character."""
    if not values:
        return None
    text = ", ".join(values).strip(OWS)
    if text == ANY:
        return ANY
    tags: list[EntityTag] = []
    pos = 0
    while pos < len(text):
        if text[pos] in OWS + ",":
            pos += 1
            continue
        match = ENTITY_TAG.match(text, pos)
        if match is None:
            raise MalformedPrecondition(
                f'{header}: expected "*" or a list of quoted entity tags such as "abc" or '
                f'W/"abc" (RFC 9110 §13.1), found {text!r}.',
                errors=[{"field": header, "in": "header", "message": "malformed entity tag"}],
            )
        tags.append(EntityTag(match.group(2), weak=match.group(1) is not None))
        pos = match.end()
        while pos < len(text) and text[pos] in OWS:
            pos += 1
        if pos < len(text) and text[pos] != ",":
            raise MalformedPrecondition(
                f"{header}: entity tags must be separated by commas, found {text!r}.",
                errors=[{"field": header, "in": "header", "message": "malformed list"}],
            )
    return tuple(tags)


@dataclass(frozen=True, slots=True)
class Preconditions:
    """The conditions of one request; `check` decides whether it may go ahead."""

    if_match: TagList | None = None
    if_none_match: TagList | None = None

    @classmethod
    def parse(cls, if_match: list[str], if_none_match: list[str]) -> Preconditions:
        return cls(
            parse_tag_list("If-Match", if_match), parse_tag_list("If-None-Match", if_none_match)
        )

    @property
    def present(self) -> bool:
        return self.if_match is not None or self.if_none_match is not None

    def passes(self, current: str | None) -> bool:
        """Whether a state-changing request may proceed on the representation whose strong ETag
        is `current` (None: nothing stored), evaluated in RFC 9110 §13.2.2's order:

        1. If-Match (§13.1.1): `*` is true when a representation exists; a list is true when one
           member matches by *strong* comparison (§8.8.3.2: both strong, same opaque-tag), so a
           weak tag never matches. Nothing stored: false.
        2. If-None-Match (§13.1.2): `*` is false when a representation exists; a list is false
           when one member matches by *weak* comparison (same opaque-tag, weak or not)."""
        if self.if_match is not None:
            if current is None:
                return False
            if self.if_match != ANY and not any(
                not tag.weak and tag.opaque == current for tag in self.if_match
            ):
                return False
        if self.if_none_match is not None and current is not None:
            if self.if_none_match == ANY:
                return False
            if any(tag.opaque == current for tag in self.if_none_match):
                return False
        return True

    def check(self, current: str | None, detail: str | None = None, **extensions: Any) -> None:
        """Raise ConditionFailed (412, RFC 9110 §15.5.13) unless `passes(current)`; `detail`
        tells the client what to read again."""
        if not self.passes(current):
            raise ConditionFailed(
                detail
                or "The resource is not in the state this request's If-Match / If-None-Match "
                "requires; read it again for its current ETag.",
                **extensions,
            )

    def not_modified(self, current: str | None) -> bool:
        """For GET: If-None-Match matches the current representation, so 304 (§13.1.2)."""
        return (
            self.if_none_match is not None
            and current is not None
            and (
                self.if_none_match == ANY
                or any(tag.opaque == current for tag in self.if_none_match)
            )
        )


NONE = Preconditions()


def none_match(values: list[str], current: EntityTag) -> bool:
    """Whether a GET's `If-None-Match` field lines match `current`, so the answer is
    `304 Not Modified` (RFC 9110 §13.1.2): `*` matches any representation; a list matches when
    one member has `current`'s opaque-tag, weak or strong (weak comparison, §8.8.3.2).

    A value the grammar does not allow is ignored, as if the field were absent: the answer is
    then the full 200, which is always a correct answer to a GET, whereas refusing the request
    (400) would break a reader for the sake of an optimisation. (A write's If-Match is different:
    ignoring it would write blind, so there it is a 400.)"""
    if not values:
        return False
    try:
        tags = parse_tag_list("If-None-Match", values)
    except MalformedPrecondition:
        return False
    if tags is None:
        return False
    return tags == ANY or any(tag.opaque == current.opaque for tag in tags)


def parse_entity_tag(value: str) -> EntityTag:
    """An `ETag` field value (`"7"`, `W/"r12"`) as an EntityTag; ValueError if it is not one."""
    match = ENTITY_TAG.fullmatch(value)
    if match is None:
        raise ValueError(f"not an entity tag: {value!r}")
    return EntityTag(match.group(2), weak=match.group(1) is not None)


def required_if_match(values: list[str], detail: str, **extensions: Any) -> Preconditions:
    """The If-Match of a write that must not be made blind: its field lines parsed, or
    ConditionRequired (428, RFC 6585 §3) when there are none, with `detail` saying where the
    ETag comes from. Raises MalformedPrecondition (400) as `parse_tag_list` does."""
    if_match = parse_tag_list("If-Match", values)
    if if_match is None:
        raise ConditionRequired(detail, **extensions)
    return Preconditions(if_match=if_match)
