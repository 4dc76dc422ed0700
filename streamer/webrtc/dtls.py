"""DTLS for every publisher: RSA and ECDSA peers, and why a handshake failed.

aiortc offers only ECDHE-ECDSA cipher suites. That is enough when aiortc is the DTLS server
(the suite follows the server's certificate, and ours is ECDSA P-256), but when aiortc is the
DTLS client of a peer whose certificate is RSA (GStreamer's `webrtcbin` and the WHIP clients
built on it, with their default certificates), the peer finds no suite it can sign with and
the handshake fails ("no shared cipher"). `InteropCertificate` keeps aiortc's ECDSA certificate
and suites, and adds the ECDHE-RSA suites that browsers offer too (RFC 8827 mandates the ECDSA
one; it forbids nothing else). The list stays short so that a ClientHello fits one datagram
(aiortc PR #1011: some DTLS stacks cannot reassemble a fragmented one).

Not fixable here: FFmpeg's `whip` muxer built with GnuTLS (PyAV's wheels) makes an ECDSA
certificate on P-224 by default and insists on being the DTLS server; OpenSSL 3.5+ (the one in
`cryptography`) no longer has P-224 as a TLS group, so as its client we must refuse it ("wrong
curve"). The failure is reported with that reason; FFmpeg works given a P-256 certificate
(`cert_file` / `key_file`, docs/protocol.md).

aiortc has no option for its cipher list (upstream: aiortc issue #956, PRs #1392 / #1421, open),
so `configure_dtls()` replaces the certificate class that `RTCPeerConnection` instantiates,
process-wide, as `configure_ice_hosts` does for ICE. It relies on two aiortc internals, both
checked by `tests/test_whip_interop.py` so that an aiortc upgrade that moves them fails loudly:
`aiortc.rtcpeerconnection.RTCCertificate.generateCertificate()` builds each connection's
certificate, and `RTCCertificate._create_ssl_context()` builds its OpenSSL context. When aiortc
grows an option for this, use it and delete this module.

The certificate also records the DTLS alerts of its connection (OpenSSL's info callback), so
that a failed handshake can be reported with a reason (`transport_failure`) rather than
aiortc's debug-level "DTLS handshake failed".
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import aiortc.rtcpeerconnection
from aiortc import RTCCertificate, RTCPeerConnection
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from OpenSSL import SSL

from streamer.webrtc.failures import FailureStage

# Browsers' DTLS suites, ECDSA first (ours is an ECDSA certificate: as the DTLS server we
# can only pick these), then the ECDHE-RSA ones an RSA server needs from us as its client.
CIPHER_LIST = b":".join(
    (
        b"ECDHE-ECDSA-AES128-GCM-SHA256",
        b"ECDHE-ECDSA-CHACHA20-POLY1305",
        b"ECDHE-ECDSA-AES128-SHA",
        b"ECDHE-ECDSA-AES256-SHA",
        b"ECDHE-RSA-AES128-GCM-SHA256",
        b"ECDHE-RSA-CHACHA20-POLY1305",
        b"ECDHE-RSA-AES128-SHA",
        b"ECDHE-RSA-AES256-SHA",
    )
)

# TLS alert descriptions (RFC 5246 section 7.2, RFC 8446 section 6) that a handshake may end with.
_ALERTS = {
    0: "close_notify",
    10: "unexpected_message",
    20: "bad_record_mac",
    40: "handshake_failure",
    42: "bad_certificate",
    43: "unsupported_certificate",
    44: "certificate_revoked",
    45: "certificate_expired",
    46: "certificate_unknown",
    47: "illegal_parameter",
    48: "unknown_ca",
    50: "decode_error",
    51: "decrypt_error",
    70: "protocol_version",
    71: "insufficient_security",
    80: "internal_error",
    90: "user_canceled",
    110: "unsupported_extension",
}


@dataclass(frozen=True)
class DtlsAlert:
    """A TLS alert seen during a handshake: `sent` by us or received from the peer."""

    sent: bool
    fatal: bool
    description: str  # e.g. "handshake_failure"
    during: str  # OpenSSL's handshake state at the time, e.g. "SSLv3/TLS read client hello"
    peer_key: str | None = None  # the peer certificate's key, e.g. "RSA 2048", "ECDSA secp224r1"

    def __str__(self) -> str:
        who = "we sent" if self.sent else "the peer sent"
        level = "fatal" if self.fatal else "warning"
        text = f"{who} a {level} {self.description} alert during {self.during!r}"
        if self.peer_key is not None:
            text += f"; the peer's certificate key is {self.peer_key}"
            if self.peer_key.startswith("ECDSA") and self.peer_key[6:] not in _DTLS_CURVES:
                text += (
                    ", a curve OpenSSL no longer accepts in DTLS 1.2: give the publisher an "
                    "ECDSA P-256 or RSA certificate (FFmpeg: -cert_file/-key_file)"
                )
        return text


# Curves of ECDSA certificates that OpenSSL 3.5+ accepts from a DTLS 1.2 peer (its groups).
_DTLS_CURVES = ("secp256r1", "secp384r1", "secp521r1")


def _describe_key(connection: SSL.Connection) -> str | None:
    certificate = connection.get_peer_certificate(as_cryptography=True)
    if certificate is None:
        return None
    key = certificate.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        return f"RSA {key.key_size}"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name}"
    return type(key).__name__


class InteropCertificate(RTCCertificate):
    """aiortc's ECDSA P-256 certificate with `CIPHER_LIST`, recording DTLS alerts."""

    _by_fingerprint: weakref.WeakValueDictionary[str, InteropCertificate] = (
        weakref.WeakValueDictionary()
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.alerts: list[DtlsAlert] = []  # fatal ones end the handshake; bounded below
        for fingerprint in self.getFingerprints():
            InteropCertificate._by_fingerprint[fingerprint.value] = self

    def _create_ssl_context(self, srtp_profiles: list[Any]) -> SSL.Context:
        ctx = super()._create_ssl_context(srtp_profiles)
        ctx.set_cipher_list(CIPHER_LIST)
        ctx.set_info_callback(self._on_ssl_info)
        return ctx

    def _on_ssl_info(self, connection: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_ALERT or len(self.alerts) >= 16:
            return
        state = connection.get_state_string()
        sent, fatal = bool(where & SSL.SSL_CB_WRITE), (ret >> 8) == 2
        self.alerts.append(
            DtlsAlert(
                sent=sent,
                fatal=fatal,
                description=_ALERTS.get(ret & 0xFF, f"alert {ret & 0xFF}"),
                during=state.decode(errors="replace") if state else "?",
                peer_key=_describe_key(connection) if sent and fatal else None,
            )
        )

    @classmethod
    def of(cls, pc: RTCPeerConnection) -> InteropCertificate | None:
        """The certificate of `pc` (found by its transports' public fingerprints), or None
        (no transport yet, or `configure_dtls` was not called)."""
        for transport in _dtls_transports(pc):
            for fingerprint in transport.getLocalParameters().fingerprints:
                certificate = cls._by_fingerprint.get(fingerprint.value)
                if certificate is not None:
                    return certificate
        return None


def configure_dtls() -> None:
    """Make every later `RTCPeerConnection` of this process use `InteropCertificate`
    (idempotent). Raises RuntimeError when aiortc no longer builds certificates the way this
    module expects (see the module docstring)."""
    current = getattr(aiortc.rtcpeerconnection, "RTCCertificate", None)
    if current is None or not issubclass(current, RTCCertificate):
        raise RuntimeError(
            "aiortc.rtcpeerconnection.RTCCertificate is gone: streamer.webrtc.dtls needs "
            "updating for this aiortc version"
        )
    # setattr: mypy forbids assigning to a class name, but replacing it is the point here.
    setattr(aiortc.rtcpeerconnection, "RTCCertificate", InteropCertificate)  # noqa: B010


def _dtls_transports(pc: RTCPeerConnection) -> list:
    transports = [t.receiver.transport for t in pc.getTransceivers()]
    if pc.sctp is not None:
        transports.append(pc.sctp.transport)
    return transports


def transport_failure(pc: RTCPeerConnection) -> tuple[FailureStage, str]:
    """(stage, reason) of a connection that failed.

    stage: ICE (no candidate pair answered: wrong addresses, a firewall) or DTLS (the
    handshake failed: no shared cipher, a fingerprint that does not match the SDP...)."""
    transports = _dtls_transports(pc)
    if any(t.state == "failed" for t in transports):
        certificate = InteropCertificate.of(pc)
        fatal = [a for a in (certificate.alerts if certificate else []) if a.fatal]
        if fatal:
            return FailureStage.DTLS, f"DTLS handshake failed: {fatal[0]}"
        return FailureStage.DTLS, (
            "DTLS handshake failed without an alert (certificate fingerprint or SRTP profile "
            "mismatch; aiortc's debug log has details)"
        )
    if any(t.transport.state == "failed" for t in transports):
        return FailureStage.ICE, "ICE failed: no candidate pair answered the connectivity checks"
    return FailureStage.ICE, f"connection failed ({transport_states(pc)})"


def transport_states(pc: RTCPeerConnection) -> str:
    """A short description of where a connection stands, e.g. "ice checking, dtls new"."""
    transports = _dtls_transports(pc)
    if not transports:
        return "no transport"
    first = transports[0]
    return f"ice {first.transport.state}, dtls {first.state}"
