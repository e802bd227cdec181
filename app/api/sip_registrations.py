"""`/api/sip/registrations`: callbridge registered as a user on a PBX (a cloud PBX sends calls only to
registered users). The password is write-only; `successful`, `lastError` and `expiresAt` are read-only.

Creating, changing or deleting one takes effect at once on this instance (its REGISTER client starts,
restarts or de-registers); other instances pick registrations up when they start.
"""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from app.api.errors import json_object, validated
from app.api.paging import page_params, page_response
from app.api.route_doc import DocRoute, RouteDoc
from app.errors import NotFound, ServiceError
from app.schemas.sip_registrations import (
    REGISTRATION_ERROR_CODES,
    SipRegistration,
    SipRegistrationCreate,
    SipRegistrationUpdate,
    parse_registrar,
)
from app.services import Services, services_of
from app.store.tables import SipRegistrationRow, utcnow


class TransportNotListening(ServiceError):
    """The registration is well-formed but this server cannot use it: 422."""

    status = 422


def registration_view(row: SipRegistrationRow) -> dict[str, object]:
    return SipRegistration(
        registration_id=row.id,
        created=row.created,
        username=row.username,
        proxy=row.proxy,
        outbound_proxy=row.outbound_proxy,
        auth_user=row.auth_user,
        tls_verify=row.tls_verify,
        successful=row.successful,
        last_error=row.last_error,
        expires_at=row.expires_at,
    ).to_json()


def _check_transport(services: Services, row: SipRegistrationRow) -> None:
    """422 when SIP runs without a listener for the transport the registration needs."""
    if services.sip is None:
        return
    hop = row.outbound_proxy or row.proxy
    transport = parse_registrar(hop).transport
    if transport not in services.sip.ua.transports_listening:
        field = "outboundProxy" if row.outbound_proxy else "proxy"
        raise TransportNotListening(
            "transport_not_listening",
            f"{field}: {transport} is not among CALLBRIDGE_SIP_LISTEN's transports",
        )


async def _load(services: Services, registration_id: str) -> SipRegistrationRow:
    row = await services.sip_registrations.get(registration_id)
    if row is None:
        raise NotFound("sip_registration_not_found", f"no SIP registration with id {registration_id}")
    return row


async def list_registrations(request: Request) -> Response:
    cursor, size = page_params(request)
    page = await services_of(request).sip_registrations.page(cursor, size)
    return page_response(request, page, registration_view)


async def create_registration(request: Request) -> Response:
    services = services_of(request)
    body = validated(SipRegistrationCreate, await json_object(request), codes=REGISTRATION_ERROR_CODES)
    row = SipRegistrationRow(
        id=str(uuid.uuid4()),
        created=utcnow(),
        username=body.username,
        password=body.password,
        proxy=body.proxy,
        outbound_proxy=body.outbound_proxy,
        auth_user=body.auth_user,
        tls_verify=body.tls_verify,
    )
    _check_transport(services, row)
    await services.sip_registrations.add(row)
    if services.sip is not None:
        services.sip.registrations.started(row)
    return JSONResponse(registration_view(row), status_code=201)


async def get_registration(request: Request) -> Response:
    row = await _load(services_of(request), request.path_params["registration_id"])
    return JSONResponse(registration_view(row))


async def update_registration(request: Request) -> Response:
    """PATCH: the fields given replace the stored ones; the registration starts over with them."""
    services = services_of(request)
    row = await _load(services, request.path_params["registration_id"])
    patch = validated(SipRegistrationUpdate, await json_object(request), codes=REGISTRATION_ERROR_CODES)
    changes = patch.changes()
    for name, value in changes.items():
        if name != "password":
            setattr(row, name, value)
    _check_transport(services, row)
    updated = await services.sip_registrations.update(row.id, **changes)
    if updated is None:
        raise NotFound("sip_registration_not_found", f"no SIP registration with id {row.id}")
    if services.sip is not None:
        await services.sip.registrations.restarted(updated)
    return JSONResponse(registration_view(updated))


async def delete_registration(request: Request) -> Response:
    """DELETE: the binding is removed from the registrar (bounded wait), then the registration."""
    services = services_of(request)
    registration_id = request.path_params["registration_id"]
    if not await services.sip_registrations.delete(registration_id):
        raise NotFound("sip_registration_not_found", f"no SIP registration with id {registration_id}")
    if services.sip is not None:
        await services.sip.registrations.removed(registration_id)
    return Response(status_code=204)


REGISTRATIONS_PATH = "/sip/registrations"
_ONE = REGISTRATIONS_PATH + "/{registration_id}"
_NOT_FOUND = (404, "sip_registration_not_found")
_BAD_INPUT = (*((400, code) for code in sorted(REGISTRATION_ERROR_CODES)), (422, "transport_not_listening"))
ROUTES = [
    DocRoute(
        REGISTRATIONS_PATH,
        list_registrations,
        methods=["GET"],
        doc=RouteDoc("List SIP registrations", "sip", response=SipRegistration, paged=True),
    ),
    DocRoute(
        REGISTRATIONS_PATH,
        create_registration,
        methods=["POST"],
        doc=RouteDoc(
            "Register callbridge as a user on a PBX",
            "sip",
            body=SipRegistrationCreate,
            example={
                "username": "callbridge",
                "password": "example-password",
                "proxy": "sip:pbx.example.com",
            },
            response=SipRegistration,
            status=201,
            errors=_BAD_INPUT,
        ),
    ),
    DocRoute(
        _ONE,
        get_registration,
        methods=["GET"],
        doc=RouteDoc("Get a SIP registration", "sip", response=SipRegistration, errors=(_NOT_FOUND,)),
    ),
    DocRoute(
        _ONE,
        update_registration,
        methods=["PATCH"],
        doc=RouteDoc(
            "Change a SIP registration",
            "sip",
            "The fields given replace the stored ones; the registration starts over with them.",
            body=SipRegistrationUpdate,
            example={"tlsVerify": False},
            response=SipRegistration,
            errors=(_NOT_FOUND, *_BAD_INPUT),
        ),
    ),
    DocRoute(
        _ONE,
        delete_registration,
        methods=["DELETE"],
        doc=RouteDoc("Delete a SIP registration", "sip", status=204, errors=(_NOT_FOUND,)),
    ),
]
