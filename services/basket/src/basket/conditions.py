"""Conditional requests as HTTP defines them (RFC 9110 §13): parse `If-Match` and
`If-None-Match`, then evaluate them against the basket's current entity tag.

Pure functions, no I/O: the basket service evaluates them on the version it is about to write over,
inside its read-modify-write loop, so a condition and the write it guards see the same version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from eshop_common.problems import BadRequest, PreconditionFailed

# RFC 9110 §8.8.3: entity-tag = [ weak ] opaque-tag; weak = %s"W/";
# opaque-tag = DQUOTE *etagc DQUOTE; etagc = %x21 / %x23-7E / obs-text (%x80-FF).
ENTITY_TAG = re.compile(r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"')
OWS = " \t"
ANY: Literal["*"] = "*"


class MalformedPrecondition(BadRequest):
    type = "/problems/malformed-precondition"


class BasketPreconditionFailed(PreconditionFailed):
    type = "/problems/precondition-failed"


@dataclass(frozen=True, slots=True)
class EntityTag:
    opaque: str
    weak: bool = False

    def __str__(self) -> str:
        return f'{"W/" if self.weak else ""}"{self.opaque}"'


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

    def check(self, current: str | None) -> None:
        """Raise BasketPreconditionFailed (412, RFC 9110 §15.5.13) unless `passes(current)`."""
        if not self.passes(current):
            raise BasketPreconditionFailed(
                "The basket is not in the state this request's If-Match / If-None-Match "
                "requires; read it again (GET /api/basket gives its current ETag)."
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
