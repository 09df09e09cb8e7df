"""RFC 9110 §13 conditions as pure functions: parsing and evaluation, over generated headers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from eshop_common.conditions import (
    ANY,
    ConditionFailed,
    ConditionRequired,
    EntityTag,
    MalformedPrecondition,
    Preconditions,
    parse_tag_list,
    required_if_match,
)

# RFC 9110 §8.8.3: etagc = %x21 / %x23-7E / obs-text
opaque = st.text(
    st.sampled_from([chr(0x21), *map(chr, range(0x23, 0x7F)), "\x80", "\xff"]), max_size=12
)
tags = st.builds(EntityTag, opaque, st.booleans())
ows = st.sampled_from(["", " ", "\t", "  "])


@given(st.lists(tags, min_size=1, max_size=5), ows, ows)
def test_any_list_of_entity_tags_parses_back_to_itself(members, before, after):
    """§5.6.1: a list is members separated by OWS "," OWS; §5.3: field lines join with ","."""
    header = f"{before},{after}".join(str(t) for t in members)
    assert parse_tag_list("If-Match", [header]) == tuple(members)
    assert parse_tag_list("If-Match", [str(t) for t in members]) == tuple(members)


@pytest.mark.parametrize(
    "value", ["0", "abc", '"a', 'a"', '"a" "b"', '"a";', 'w/"a"', '*, "a"', '"a\x7f"', '"a"b']
)
def test_a_value_outside_the_grammar_is_a_400(value):
    """§13.1.1 If-Match = "*" / #entity-tag; §8.8.3 entity-tag = [ W/ ] DQUOTE *etagc DQUOTE."""
    with pytest.raises(MalformedPrecondition) as raised:
        parse_tag_list("If-Match", [value])
    assert raised.value.status == 400


def test_star_and_empty_elements():
    assert parse_tag_list("If-Match", [" * "]) == ANY
    assert parse_tag_list("If-Match", ['"a", , "b",']) == (EntityTag("a"), EntityTag("b"))
    assert parse_tag_list("If-Match", ['""']) == (EntityTag(""),)
    assert parse_tag_list("If-Match", []) is None


@given(opaque, opaque)
def test_if_match_uses_strong_comparison(current, other):
    """§13.1.1 and §8.8.3.2: a weak tag never matches; a strong one only its own opaque-tag."""
    assert Preconditions(if_match=(EntityTag(current),)).passes(current)
    assert not Preconditions(if_match=(EntityTag(current, weak=True),)).passes(current)
    assert Preconditions(if_match=(EntityTag(other),)).passes(current) == (other == current)
    assert Preconditions(if_match=(EntityTag(other), EntityTag(current))).passes(current)


@given(opaque)
def test_if_match_fails_when_nothing_is_stored(tag):
    """§13.1.1: `*` or any list is false when there is no current representation."""
    assert not Preconditions(if_match=ANY).passes(None)
    assert not Preconditions(if_match=(EntityTag(tag),)).passes(None)
    with pytest.raises(ConditionFailed):
        Preconditions(if_match=(EntityTag(tag),)).check(None)


@given(opaque, st.booleans())
def test_if_none_match_uses_weak_comparison(current, weak):
    """§13.1.2: false when a member matches weakly; `*` false when a representation exists."""
    assert not Preconditions(if_none_match=(EntityTag(current, weak),)).passes(current)
    assert Preconditions(if_none_match=(EntityTag(current + "x", weak),)).passes(current)
    assert not Preconditions(if_none_match=ANY).passes(current)
    assert Preconditions(if_none_match=ANY).passes(None)


def test_if_match_is_evaluated_before_if_none_match():
    """§13.2.2: If-Match first; when it holds, If-None-Match is still evaluated."""
    both = Preconditions(if_match=(EntityTag("a"),), if_none_match=(EntityTag("a"),))
    assert not both.passes("a")
    assert not Preconditions(if_match=(EntityTag("b"),), if_none_match=ANY).passes(None)


def test_a_required_if_match_that_is_absent_is_a_428():
    """RFC 6585 §3: the origin server requires the request to be conditional; 428 says so."""
    with pytest.raises(ConditionRequired) as raised:
        required_if_match([], "Send If-Match.")
    assert raised.value.status == 428
    assert raised.value.detail == "Send If-Match."


@given(opaque)
def test_a_required_if_match_that_is_present_is_evaluated_as_if_match(current):
    """RFC 9110 §13.1.1: present, it is an ordinary If-Match; a malformed one is still a 400."""
    assert required_if_match([f'"{current}"'], "").passes(current)
    assert not required_if_match([f'"{current}x"'], "").passes(current)
    assert required_if_match(["*"], "").passes(current)
    with pytest.raises(MalformedPrecondition):
        required_if_match([current + "0"], "")
