"""Template context: mustache rendering, JSON Schema validation, requestContextMapping."""

from __future__ import annotations

import pytest

from app.calls.templates import map_request_context, merge_context, render, validate_context
from app.errors import InvalidInput


def test_nested_variables_are_rendered() -> None:
    assert (
        render("Hi {{user.name}} from {{ city }}", {"user": {"name": "Ada"}, "city": "Paris"})
        == "Hi Ada from Paris"
    )


def test_triple_mustache_renders_raw_like_double() -> None:
    assert render("{{{x}}} & {{x}}", {"x": "<b>&"}) == "<b>& & <b>&"


def test_missing_variables_render_empty() -> None:
    assert render("[{{a.b.c}}]", {"a": {}}) == "[]"


def test_non_string_values_render_as_json() -> None:
    assert render("{{n}} {{ok}} {{items}}", {"n": 3, "ok": True, "items": [1, 2]}) == "3 true [1,2]"


def test_a_schema_accepts_the_context_it_describes_and_refuses_one_missing_a_required_field() -> None:
    schema = {"type": "object", "properties": {"user": {"type": "object", "required": ["age"]}}}
    validate_context({"user": {"age": 3}}, schema)  # accepted: no InvalidInput
    with pytest.raises(InvalidInput, match=r"templateContext.user: 'age' is a required property"):
        validate_context({"user": {}}, schema)


def test_invalid_context_names_the_failing_path() -> None:
    schema = {
        "type": "object",
        "properties": {"user": {"type": "object", "properties": {"age": {"type": "integer"}}}},
    }
    with pytest.raises(InvalidInput) as info:
        validate_context({"user": {"age": "old"}}, schema)
    assert info.value.code == "invalid_template_context"
    assert info.value.detail.startswith("templateContext.user.age: 'old' is not of type 'integer'")


def test_missing_required_property_is_reported_at_its_parent() -> None:
    with pytest.raises(InvalidInput, match=r"templateContext: 'name' is a required property"):
        validate_context({}, {"type": "object", "required": ["name"]})


def test_request_context_mapping_builds_nested_context() -> None:
    fields = {"From": "+1555", "To": "+1666", "CallSid": "CA1"}
    mapping = {"From": "user.phone_number", "CallSid": "call.sid", "Missing": "x.y"}
    assert map_request_context(fields, mapping) == {"user": {"phone_number": "+1555"}, "call": {"sid": "CA1"}}


def test_request_context_mapping_reads_dot_paths_in_nested_requests() -> None:
    assert map_request_context({"payload": {"from": "+1"}}, {"payload.from": "caller"}) == {"caller": "+1"}


def test_merge_context_is_deep_and_later_wins() -> None:
    assert merge_context({"user": {"a": 1, "b": 1}}, {"user": {"b": 2}}) == {"user": {"a": 1, "b": 2}}
