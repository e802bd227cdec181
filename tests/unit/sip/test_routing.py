"""SipPolicy (who may call, which agent answers) and the context an INVITE's headers and From give."""

from __future__ import annotations

from typing import Any

from app.schemas.sip import SipConfigFields
from app.sip.routing import (
    MAX_CONTEXT_HEADERS,
    MAX_HEADER_VALUE_BYTES,
    MAX_HEADERS_TOTAL_BYTES,
    SipContext,
    SipPolicy,
    sip_context,
    template_context,
)

SALES = "11111111-1111-4111-8111-111111111111"
SUPPORT = "22222222-2222-4222-8222-222222222222"
FROM = {"caller_id": "+15551234567", "display_name": "Bob", "from_uri": "sip:+15551234567@pbx.example.com"}
SYSTEM = {
    "caller_id": "+15551234567",
    "from_display_name": "Bob",
    "from_uri": "sip:+15551234567@pbx.example.com",
}


def policy(**fields: Any) -> SipPolicy:
    return SipPolicy.from_config(SipConfigFields.model_validate(fields))


def context_of(*headers: tuple[str, str]) -> SipContext:
    return sip_context(list(headers), None, None, None)


# --- sources ------------------------------------------------------------------------------------


def test_a_source_inside_an_allowed_range_is_allowed() -> None:
    assert policy(allowedCidrRanges=["10.0.0.0/8", "192.168.1.7/32"]).source_allowed("192.168.1.7")


def test_a_source_outside_every_range_is_refused() -> None:
    assert not policy(allowedCidrRanges=["10.0.0.0/8"]).source_allowed("11.0.0.1")


def test_a_fresh_policy_allows_no_source() -> None:
    assert not SipPolicy().source_allowed("127.0.0.1")


def test_an_ipv6_source_is_never_allowed() -> None:
    assert not policy(allowedCidrRanges=["0.0.0.0/0"]).source_allowed("2001:db8::1")


def test_an_ipv4_mapped_ipv6_source_counts_as_its_ipv4_address() -> None:
    assert policy(allowedCidrRanges=["10.0.0.0/8"]).source_allowed("::ffff:10.1.2.3")


def test_a_source_that_is_no_address_is_refused() -> None:
    assert not policy(allowedCidrRanges=["0.0.0.0/0"]).source_allowed("pbx.example.com")


# --- routing ------------------------------------------------------------------------------------


def test_the_first_matching_pattern_wins() -> None:
    routes = policy(
        allowedAgents=[
            {"agentId": SALES, "toUserPattern": "^sales$"},
            {"agentId": SUPPORT, "toUserPattern": "sales|support"},
        ]
    )
    assert routes.route("sales") == SALES
    assert routes.route("support") == SUPPORT


def test_a_pattern_must_match_the_whole_user() -> None:
    routes = policy(allowedAgents=[{"agentId": SALES, "toUserPattern": "sales"}])
    assert routes.route("sales") == SALES
    assert routes.route("presales") is None and routes.route("sales2") is None


def test_a_pattern_alternation_matches_whole_users_only() -> None:
    routes = policy(allowedAgents=[{"agentId": SALES, "toUserPattern": "15551234567|15557654321"}])
    assert routes.route("15557654321") == SALES
    assert routes.route("155512345678") is None


def test_the_user_is_matched_as_the_parser_decoded_it() -> None:
    routes = policy(allowedAgents=[{"agentId": SALES, "toUserPattern": r"\+1 555 sales"}])
    assert routes.route("+1 555 sales") == SALES
    assert routes.route("%2B1%20555%20sales") is None


def test_a_missing_user_is_matched_as_the_empty_string() -> None:
    assert policy(allowedAgents=[{"agentId": SALES, "toUserPattern": ".*"}]).route(None) == SALES
    assert policy(allowedAgents=[{"agentId": SALES, "toUserPattern": ".+"}]).route(None) is None


def test_agent_users_route_only_when_all_agents_are_allowed() -> None:
    assert policy(allowAllAgents=True).route(f"agent_{SALES}") == SALES
    assert policy(allowAllAgents=False).route(f"agent_{SALES}") is None


def test_patterns_come_before_agent_users() -> None:
    routes = policy(allowAllAgents=True, allowedAgents=[{"agentId": SUPPORT, "toUserPattern": "agent_.*"}])
    assert routes.route(f"agent_{SALES}") == SUPPORT


def test_an_agent_user_without_an_id_routes_nowhere() -> None:
    assert policy(allowAllAgents=True).route("agent_") is None


def test_an_agent_without_a_pattern_answers_its_agent_user() -> None:
    routes = policy(allowedAgents=[{"agentId": SALES}])
    assert routes.route(f"agent_{SALES}") == SALES
    assert routes.route(f"agent_{SUPPORT}") is None


def test_no_rule_routes_nowhere() -> None:
    assert SipPolicy().route("sales") is None


# --- X- header context --------------------------------------------------------------------------


def test_x_headers_become_keys_without_the_prefix_lower_cased_with_underscores() -> None:
    assert context_of(("X-Customer-Name", "Bob")).headers == {"customer_name": "Bob"}


def test_x_header_values_are_parsed_as_json_where_they_parse() -> None:
    sip = context_of(
        ("X-Complex-Value", '{"subkey": "value"}'),
        ("X-Count", "3"),
        ("X-Flag", "true"),
        ("X-Phone", "+15551234567"),
    )
    assert sip.headers == {
        "complex_value": {"subkey": "value"},
        "count": 3,
        "flag": True,
        "phone": "+15551234567",
    }


def test_other_headers_are_not_context() -> None:
    assert context_of(("Subject", "hi"), ("Xtra", "1"), ("x-lower", "ok")).headers == {"lower": "ok"}


def test_headers_past_the_count_cap_are_dropped_and_named() -> None:
    headers = [(f"X-H{n}", "v") for n in range(MAX_CONTEXT_HEADERS + 2)]
    sip = context_of(*headers)
    assert len(sip.headers) == MAX_CONTEXT_HEADERS
    assert [d.split(":")[0] for d in sip.dropped] == [
        f"X-H{MAX_CONTEXT_HEADERS}",
        f"X-H{MAX_CONTEXT_HEADERS + 1}",
    ]


def test_a_value_over_the_size_cap_is_dropped() -> None:
    sip = context_of(("X-Big", "x" * (MAX_HEADER_VALUE_BYTES + 1)), ("X-Small", "ok"))
    assert sip.headers == {"small": "ok"}
    assert len(sip.dropped) == 1 and sip.dropped[0].startswith("X-Big:")


def test_values_past_the_total_cap_are_dropped() -> None:
    value = "x" * MAX_HEADER_VALUE_BYTES
    fitting = MAX_HEADERS_TOTAL_BYTES // MAX_HEADER_VALUE_BYTES
    sip = context_of(*[(f"X-V{n}", value) for n in range(fitting)], ("X-Over", "ok"))
    assert len(sip.headers) == fitting and "over" not in sip.headers
    assert sip.dropped == (f"X-Over: over {MAX_HEADERS_TOTAL_BYTES} bytes of header values in all",)


def test_a_header_may_not_set_callbridge_keys() -> None:
    sip = context_of(("X-Callbridge", '{"sip": {"caller_id": "+1999"}}'))
    assert sip.headers == {} and len(sip.dropped) == 1


def test_a_second_header_for_the_same_key_is_dropped() -> None:
    sip = context_of(("X-Account", "1"), ("X-account", "2"))
    assert sip.headers == {"account": 1} and len(sip.dropped) == 1


def test_a_value_that_is_not_utf8_is_dropped() -> None:
    sip = context_of(("X-Raw", "caf\udce9"))
    assert sip.headers == {} and sip.dropped == ("X-Raw: value is not UTF-8",)


def test_a_header_with_no_name_after_the_prefix_is_dropped() -> None:
    assert context_of(("X-", "1")).dropped == ("X-: no name after X-",)


def test_the_from_values_are_the_system_keys() -> None:
    assert sip_context([], **FROM).system == SYSTEM


def test_unknown_from_values_are_left_out() -> None:
    assert sip_context([], "+1555", None, "sip:+1555@pbx").system == {
        "caller_id": "+1555",
        "from_uri": "sip:+1555@pbx",
    }


# --- fitting the context to the schema ----------------------------------------------------------


def test_without_a_schema_every_header_and_the_callbridge_keys_are_context() -> None:
    sip = sip_context([("X-Customer-Name", "Bob")], **FROM)
    fitted = template_context(sip, None)
    assert fitted.context == {"customer_name": "Bob", "callbridge": {"sip": SYSTEM}}
    assert fitted.dropped == ()


def test_callbridge_keys_are_left_out_when_the_schema_forbids_extra_properties() -> None:
    schema = {
        "type": "object",
        "properties": {"customer_name": {"type": "string"}},
        "additionalProperties": False,
    }
    fitted = template_context(sip_context([("X-Customer-Name", "Bob")], **FROM), schema)
    assert fitted.context == {"customer_name": "Bob"} and fitted.dropped == ()


def test_callbridge_keys_are_added_where_the_schema_declares_them() -> None:
    schema = {
        "type": "object",
        "properties": {
            "callbridge": {
                "type": "object",
                "properties": {
                    "sip": {
                        "type": "object",
                        "properties": {"caller_id": {"type": "string"}},
                        "additionalProperties": False,
                    }
                },
            }
        },
        "additionalProperties": False,
    }
    fitted = template_context(sip_context([], **FROM), schema)
    assert fitted.context == {"callbridge": {"sip": {"caller_id": "+15551234567"}}}


def test_callbridge_keys_are_added_when_the_schema_lets_extra_properties_in() -> None:
    schema = {"type": "object", "properties": {"customer_name": {"type": "string"}}}
    assert template_context(sip_context([], **FROM), schema).context == {"callbridge": {"sip": SYSTEM}}


def test_a_header_the_schema_refuses_is_dropped_and_named() -> None:
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}, "additionalProperties": False}
    fitted = template_context(context_of(("X-Count", "3"), ("X-Stray", "x")), schema)
    assert fitted.context == {"count": 3}
    assert len(fitted.dropped) == 1 and "'stray'" in fitted.dropped[0]


def test_a_header_of_the_wrong_type_is_dropped() -> None:
    schema = {"type": "object", "properties": {"count": {"type": "integer"}}}
    fitted = template_context(context_of(("X-Count", "many")), schema)
    assert fitted.context == {} and "is not of type 'integer'" in fitted.dropped[0]


def test_a_required_key_no_header_gave_is_left_for_call_creation_to_refuse() -> None:
    schema = {"type": "object", "required": ["account"], "properties": {"account": {"type": "integer"}}}
    fitted = template_context(context_of(("X-Other", "1")), schema)
    assert fitted.context == {"other": 1} and fitted.dropped == ()


def test_a_required_key_a_header_gave_is_kept() -> None:
    schema = {"type": "object", "required": ["account"], "properties": {"account": {"type": "integer"}}}
    assert template_context(context_of(("X-Account", "42")), schema).context == {"account": 42}


def test_cap_drops_are_reported_with_the_schema_drops() -> None:
    sip = context_of(("X-Callbridge", "1"), ("X-Stray", "x"))
    fitted = template_context(sip, {"type": "object", "additionalProperties": False})
    assert len(fitted.dropped) == 2
