"""Template rendering for any template and any JSON context: always a string, never an exception; values go
in literally (a value that looks like a variable is not expanded again)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from app.calls.templates import render

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None)

#: Names a variable may have (`{{user.first_name}}`): the template's own alphabet, without dots.
_NAME_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_"
names = st.builds(
    str.__add__,
    st.text(alphabet=_NAME_START, min_size=1, max_size=1),
    st.text(alphabet=_NAME_START + "-", max_size=7),
)
#: What an API body can hold (orjson parses integers up to 64 bits).
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(names | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)
contexts = st.dictionaries(names, json_values, max_size=5)
#: Templates built from text and variable-like pieces, well-formed or not.
pieces = st.one_of(
    st.text(max_size=12),
    names.map(lambda name: "{{" + name + "}}"),
    names.map(lambda name: "{{{ " + name + " }}}"),
    st.lists(names, min_size=1, max_size=3).map(lambda path: "{{" + ".".join(path) + "}}"),
    st.sampled_from(["{{", "}}", "{{{", "}}}", "{{ }}", "{{.}}", "{{a..b}}"]),
)
templates = st.lists(pieces, max_size=8).map("".join)


@PROPERTY_SETTINGS
@given(template=templates, context=contexts)
def test_any_template_renders_to_a_string_with_any_context(template: str, context: dict[str, Any]) -> None:
    assert isinstance(render(template, context), str)


@PROPERTY_SETTINGS
@given(template=st.text(max_size=40).filter(lambda text: "{{" not in text), context=contexts)
def test_text_without_variables_is_left_as_it_is(template: str, context: dict[str, Any]) -> None:
    assert render(template, context) == template


@PROPERTY_SETTINGS
@given(
    outer=names,
    inner=names,
    value=st.text(max_size=20),
    before=st.text(max_size=8),
    after=st.text(max_size=8),
)
def test_a_string_value_is_inserted_exactly_at_its_path(
    outer: str, inner: str, value: str, before: str, after: str
) -> None:
    template = before.replace("{", "") + "{{" + f"{outer}.{inner}" + "}}" + after.replace("{", "")
    rendered = render(template, {outer: {inner: value}})
    assert rendered == before.replace("{", "") + value + after.replace("{", "")


@PROPERTY_SETTINGS
@given(name=names, other=names, secret=st.text(min_size=1, max_size=12))
def test_a_value_that_looks_like_a_variable_is_not_expanded_again(name: str, other: str, secret: str) -> None:
    context = {name: "{{" + other + "}}"} | ({other: secret} if other != name else {})
    assert render("{{" + name + "}}", context) == "{{" + other + "}}"


@PROPERTY_SETTINGS
@given(name=names, context=contexts)
def test_a_variable_the_context_lacks_renders_empty(name: str, context: dict[str, Any]) -> None:
    context.pop(name, None)
    assert render("[{{" + name + "}}]", context) == "[]"
