"""check_sip_settings for `tls:` listens: the certificate and key files, one clear line when unusable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from app.sip.service import check_sip_settings
from tests.sip_peers.certificates import self_signed


def tls_settings(tmp_path: Path, cert: str | Path = "", key: str | Path = "") -> Settings:
    return Settings(
        data_dir=tmp_path, sip_listen="tls:127.0.0.1:5061", sip_tls_cert=str(cert), sip_tls_key=str(key)
    )


def test_a_tls_listen_with_a_certificate_and_its_key_is_accepted(tmp_path: Path) -> None:
    files = self_signed(tmp_path)
    check_sip_settings(tls_settings(tmp_path, files.cert, files.key))


def test_a_tls_listen_without_certificate_names_both_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs CALLBRIDGE_SIP_TLS_CERT and CALLBRIDGE_SIP_TLS_KEY"):
        check_sip_settings(tls_settings(tmp_path))


def test_a_missing_key_file_is_named(tmp_path: Path) -> None:
    files = self_signed(tmp_path)
    with pytest.raises(ValueError, match=r"CALLBRIDGE_SIP_TLS_KEY: no file at .*nokey.pem"):
        check_sip_settings(tls_settings(tmp_path, files.cert, tmp_path / "nokey.pem"))


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    first, second = self_signed(tmp_path / "a"), self_signed(tmp_path / "b")
    with pytest.raises(ValueError, match="not a PEM certificate chain and its key"):
        check_sip_settings(tls_settings(tmp_path, first.cert, second.key))


def test_the_certificate_files_matter_only_with_a_tls_listen(tmp_path: Path) -> None:
    check_sip_settings(Settings(data_dir=tmp_path, sip_listen="udp:127.0.0.1:5060", sip_tls_cert="/nowhere"))
