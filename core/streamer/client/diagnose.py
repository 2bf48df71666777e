"""Connection failures in this project's words: a cause and a hint instead of gRPC's text.

Pure and gRPC-free (it reads the status code's name and the details text), so the running host
(``StreamRpcError``, its log line, ``/status``) and ``streamer check --connect`` say the same.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.client.connection import ResolvedConnection

__all__ = ["Diagnosis", "diagnose"]


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A connection failure in this project's words: what went wrong, and what to do."""

    cause: str
    hint: str

    def __str__(self) -> str:
        return f"{self.cause} (hint: {self.hint})"


def diagnose(code: object, details: str, conn: ResolvedConnection | None) -> Diagnosis | None:
    """Map a failed call (status ``code``, a ``grpc.StatusCode`` or its name, and gRPC's
    ``details`` text) and the connection settings to a one-line cause and a hint; None when the
    failure is not a connection problem this knows (the server's own answers, deadlines, ...).

    Pure: works on the text gRPC gives (grpcio 1.60 to 1.85 word some of these differently).
    """
    name = getattr(code, "name", code)
    if name != "UNAVAILABLE" or not details:
        return None
    text = details
    target = conn.target if conn is not None else "the server"
    tls = conn.tls if conn is not None else "Ssl handshake" in text or "Tls handshake" in text
    root_ca = f"root_ca {str(conn.root_ca)!r}" if conn is not None and conn.root_ca else None
    anchor = root_ca or "the system trust store"
    connecting = "failed to connect to all addresses" in text
    if "WRONG_VERSION_NUMBER" in text:
        return Diagnosis(
            f"{target} answered in plaintext, but TLS is configured",
            "point the target at the server's TLS port, or (loopback only) configure plaintext",
        )
    if "certificate has expired" in text:
        return Diagnosis(
            f"the server certificate of {target} has expired",
            "renew the server's certificate (and check this machine's clock)",
        )
    if "CERTIFICATE_VERIFY_FAILED" in text:
        older = "" if "unable to get local issuer" in text else " (or it has expired)"
        return Diagnosis(
            f"the server certificate of {target} is not signed by {anchor}{older}",
            "set root_ca to the CA that signed the cloud's certificate"
            if root_ca is None
            else f"check that {root_ca} is the CA that signed the cloud's certificate",
        )
    if (
        "Hostname Verification" in text
        or "is not in peer certificate" in text
        or "No match found for server name" in text
    ):
        checked = conn.checked_name() if conn is not None else "the target host"
        return Diagnosis(
            f"the server certificate of {target} is not valid for the name checked, {checked!r}",
            "set [cloud] authority to a name in the server's certificate, or give the server a "
            f"certificate for {checked!r}",
        )
    if connecting and ("Socket closed" in text or "Connection reset" in text):
        if not tls:
            return Diagnosis(
                f"{target} closed the connection: it probably expects TLS, but plaintext is "
                "configured",
                "configure TLS (root_ca, client_cert/client_key) for this target",
            )
        if conn is not None and conn.client_cert is None:
            return Diagnosis(
                f"{target} closed the connection during the TLS handshake: it probably "
                "requires a client certificate and none is configured",
                "set client_cert and client_key (the gateway's certificate and key)",
            )
        cert = f" {str(conn.client_cert)!r}" if conn is not None and conn.client_cert else ""
        return Diagnosis(
            f"{target} closed the connection during the TLS handshake: it refused the client "
            f"certificate{cert}",
            "the server must trust the CA that signed the client certificate; check the "
            "certificate has not expired and is the one the cloud registered",
        )
    if "Connection refused" in text:
        return Diagnosis(
            f"connection to {target} refused: nothing listens there",
            "check the target's host and port and that the server (or Magma's control_proxy) "
            "is running",
        )
    if "No route to host" in text or "Network is unreachable" in text:
        return Diagnosis(
            f"no route to {target}",
            "check this machine's network, routes and firewall towards the cloud",
        )
    if (
        "DNS resolution failed" in text
        or "Domain name not found" in text
        or ("errors resolving" in text)
    ):
        return Diagnosis(
            f"cannot resolve the host name of {target}",
            "check the host name (cloud_address / target) and this machine's DNS",
        )
    return None
