"""TLS for SIP (RFC 3261 §26, RFC 5630): the listening side's certificate, and the client contexts.

A `tls:HOST:PORT` listen presents CALLBRIDGE_SIP_TLS_CERT / CALLBRIDGE_SIP_TLS_KEY (PEM). Connections
callbridge opens check the far end's certificate against the system CAs and the name dialled (SNI), unless
the call or registration says `tlsVerify: false` (a PBX with a self-signed certificate).
"""

from __future__ import annotations

import ssl
from pathlib import Path

#: What a refused certificate's error says to do about it.
OPT_OUT_HINT = "set tlsVerify false to accept a self-signed certificate"


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """The listening context for a certificate chain and its key (PEM files); ValueError, in one line,
    when either is missing, unreadable or does not match the other."""
    if not cert_file or not key_file:
        missing = [
            name
            for name, value in (("CALLBRIDGE_SIP_TLS_CERT", cert_file), ("CALLBRIDGE_SIP_TLS_KEY", key_file))
            if not value
        ]
        raise ValueError(f"a tls: SIP listen needs {' and '.join(missing)} (PEM files)")
    for name, path in (("CALLBRIDGE_SIP_TLS_CERT", cert_file), ("CALLBRIDGE_SIP_TLS_KEY", key_file)):
        if not Path(path).is_file():
            raise ValueError(f"{name}: no file at {path}")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as exc:
        raise ValueError(
            f"CALLBRIDGE_SIP_TLS_CERT/KEY ({cert_file}, {key_file}): not a PEM certificate chain and its "
            f"key: {exc}"
        ) from None
    except OSError as exc:  # unreadable (permissions)
        raise ValueError(f"CALLBRIDGE_SIP_TLS_CERT/KEY cannot be read: {exc}") from None
    return context


def client_context(verify: bool = True) -> ssl.SSLContext:
    """The context for connections callbridge opens: the system CAs and hostname checks, or (`verify`
    False) no checks at all."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def refusal_reason(exc: ssl.SSLCertVerificationError, server_name: str) -> str:
    """One line saying why a certificate was refused, and how to accept a self-signed one."""
    why = exc.verify_message or exc.reason or str(exc)
    return f"the TLS certificate of {server_name} was refused ({why}): {OPT_OUT_HINT}"
