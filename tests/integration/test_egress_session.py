"""The egress session against real local servers (shared/egress/session.py): addresses are judged
when the connection is made, on the answer the connection uses; rebinding, embedded IPv4 forms and
Azure's platform addresses are refused before a byte is sent; TLS still checks the hostname; no
redirects, no proxies; a receiver that drips its answer is cut off at the call's deadline."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.egress import EgressSession, post

HOST = "hooks.example.com"
PUBLIC = "20.50.2.10"  # never connected to: every answer that holds it also holds a refused address


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers `status` with a secret body."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.status, self.headers = 200, {"X-Secret": "no"}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                receiver.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                answer = b"internal secret: hunter2"
                self.send_response(receiver.status)
                for name, value in receiver.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


class Resolver:
    """Stands in for socket.getaddrinfo: `answers[host]` is a list of answers, one per lookup (the
    last repeats), each a list of addresses in order."""

    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers, self.lookups = answers, 0

    def __call__(self, host: str, port: int, *args: object) -> list[tuple[Any, ...]]:
        answers = self.answers.get(host)
        if answers is None:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        self.lookups += 1
        addresses = answers[min(self.lookups, len(answers)) - 1]
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, port, 0, 0)) if ":" in a
                else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]


def call(session: EgressSession, url: str, **kwargs: float) -> Any:
    return post(session, url, b'{"runId":"r"}', {"Content-Type": "application/json"},
                connect_seconds=kwargs.get("connect_seconds", 5), read_seconds=kwargs.get("read_seconds", 5))


def test_a_name_answering_public_then_loopback_is_refused_at_connect_time(receiver: Receiver) -> None:
    """Multiple A records: the client that falls back to the second reaches 127.0.0.1."""
    session = EgressSession(resolver=Resolver({HOST: [[PUBLIC, "127.0.0.1"]]}))
    answer = call(session, f"http://{HOST}:{receiver.port}/pre")
    assert answer.refused and answer.status is None and receiver.requests == []
    assert answer.error == "refused: the host's address is not a public one"  # neither the address nor the kind


def test_a_rebinding_name_is_judged_on_the_answer_the_connection_uses(receiver: Receiver) -> None:
    """TTL 0: public when someone checks, 127.0.0.1 when the call connects."""
    resolver = Resolver({HOST: [[PUBLIC], ["127.0.0.1"]]})
    assert resolver(HOST, 443)[0][4][0] == PUBLIC  # what a check at validation time would have seen
    answer = call(EgressSession(resolver=resolver), f"http://{HOST}:{receiver.port}/pre")
    assert answer.refused and receiver.requests == []


@pytest.mark.parametrize("address", ["::127.0.0.1", "::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::",
                                     "2001:0:4136:e378:8000:63bf:80ff:fffe", "168.63.129.16", "169.254.169.254",
                                     "10.0.0.1", "::ffff:169.254.169.254", "0.0.0.0"])
def test_embedded_and_platform_addresses_are_refused_before_connecting(receiver: Receiver, address: str) -> None:
    answer = call(EgressSession(resolver=Resolver({HOST: [[address]]})), f"https://{HOST}/pre")
    assert answer.refused and answer.status is None


def test_the_development_setting_reaches_loopback_with_the_urls_host_header(receiver: Receiver) -> None:
    session = EgressSession(allow_loopback=True, resolver=Resolver({HOST: [["127.0.0.1"]]}))
    answer = call(session, f"http://{HOST}:{receiver.port}/pre")
    assert answer.status == 200 and not answer.refused and answer.latency_ms >= 0
    assert receiver.requests[0]["headers"]["Host"] == f"{HOST}:{receiver.port}"
    assert not hasattr(answer, "body") and "hunter2" not in repr(answer)
    refused = call(EgressSession(allow_loopback=True, resolver=Resolver({HOST: [["127.0.0.1", "10.0.0.1"]]})),
                   f"http://{HOST}:{receiver.port}/pre")
    assert refused.refused and len(receiver.requests) == 1  # loopback only, not the private network


def test_a_redirect_is_an_answer_not_a_second_request(receiver: Receiver) -> None:
    receiver.status, receiver.headers = 307, {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
    answer = call(EgressSession(allow_loopback=True), f"http://127.0.0.1:{receiver.port}/pre")
    assert answer.status == 307 and [r["path"] for r in receiver.requests] == ["/pre"]


def test_proxy_settings_in_the_environment_are_ignored(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        monkeypatch.setenv(name, "http://10.9.9.9:3128")  # a proxy would connect for us, unchecked
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    answer = call(EgressSession(allow_loopback=True), f"http://127.0.0.1:{receiver.port}/pre")
    assert answer.status == 200 and len(receiver.requests) == 1


def test_tls_checks_the_hostname_though_the_socket_was_connected_to_an_address(tmp_path: Path) -> None:
    ca_file, server_context, names = _tls(tmp_path)
    receiver = Receiver(server_context)
    try:
        session = EgressSession(allow_loopback=True, resolver=Resolver({HOST: [["127.0.0.1"]],
                                                                         "other.example.com": [["127.0.0.1"]]}))
        session.verify = str(ca_file)
        answer = call(session, f"https://{HOST}:{receiver.port}/pre")
        assert answer.status == 200 and names == [HOST]  # SNI carried the name
        wrong = call(session, f"https://other.example.com:{receiver.port}/pre")
        assert wrong.status is None and "TLS" in wrong.error and len(receiver.requests) == 1
    finally:
        receiver.server.shutdown()


def test_a_receiver_dripping_its_answer_is_cut_off_at_the_deadline() -> None:
    """requests' read timeout is per read: one header byte every 0.2 s never trips it."""
    listener = socket.create_server(("127.0.0.1", 0))
    finished = threading.Event()

    def drip() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
                for _ in range(50):  # 10 s: were the deadline not kept, the call would end with a 200
                    conn.sendall(b"x")
                    if finished.wait(0.2):
                        return
                conn.sendall(b"\r\nContent-Length: 0\r\n\r\n")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    try:
        answer = call(EgressSession(allow_loopback=True), f"http://127.0.0.1:{listener.getsockname()[1]}/pre",
                      connect_seconds=0.5, read_seconds=0.5)
    finally:
        finished.set()
        listener.close()
    assert answer.status is None and answer.error == "no answer within 1 s"


def _tls(tmp_path: Path) -> tuple[Path, ssl.SSLContext, list[str]]:
    """A CA, a certificate for HOST from it, and a server context that records the SNI names it sees."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    names: list[str] = []
    context.sni_callback = lambda _sock, name, _ctx: names.append(name) and None  # type: ignore[func-returns-value]
    return ca_file, context, names
