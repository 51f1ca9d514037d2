"""TLS and proxy conformance of the gateway's own HTTP/1.1 client, against real sockets.

The TLS server uses a CA and a server certificate generated for the test session with the
``openssl`` CLI; the client must verify both the chain and the host name. Proxies are tiny real
ones written here: a ``CONNECT`` tunnel for ``https://`` upstreams, and a forwarding proxy that
must receive absolute-form requests for ``http://`` upstreams.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lm_gateway.http.proxy import proxy_for
from lm_gateway.http.transport import ConnectError, Pool

from .test_transport_conformance import (
    CHUNKED_HEAD,
    Peer,
    Req,
    Runner,
    Upstream,
    answering,
    body_of,
    chunked,
    closed_port,
    ok,
    run,
)

__all__ = ["closed_port", "run"]  # fixtures re-used from the conformance module

# -- certificates ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certs:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A throw-away CA and a certificate for ``localhost`` (only: no IP address) signed by it."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to generate the test certificates")
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=lm-gateway test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)  # fmt: skip
    _openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost", cwd=d)
    (d / "ext.cnf").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=DNS:localhost\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf", cwd=d)  # fmt: skip
    return Certs(ca=d / "ca.pem", cert=d / "server.pem", key=d / "server.key")


def tls_upstream(certs: Certs, handler: Callable[[Peer], Awaitable[None]]) -> Upstream:
    return Upstream(handler, ssl=certs.server_context())


def localhost(up: Upstream) -> str:
    return f"https://localhost:{up.port}"


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_verified_keep_alive_chunked_and_content_length(run: Runner, certs: Certs) -> None:
    async def handler(peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            if req.target == "/stream":
                await peer.send(CHUNKED_HEAD)
                for i in range(3):
                    await peer.send(chunked(b"data: %d\n\n" % i)[:-5])
                await peer.send(b"0\r\n\r\n")
            else:
                await peer.send(ok(b'{"tls":true}'))

    async def scenario() -> None:
        async with tls_upstream(certs, handler) as up:
            pool = Pool(localhost(up), ssl_context=certs.client_context())
            try:
                for _ in range(3):
                    resp = await pool.request("POST", "/json", b"", b"{}")
                    assert await resp.read() == b'{"tls":true}'
                    resp = await pool.request("POST", "/stream", b"", b"{}")
                    assert await body_of(resp) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            finally:
                await pool.close()
            assert up.connections == 1
            assert up.requests[0].headers["host"] == f"localhost:{up.port}"

    run(scenario)


def test_tls_untrusted_certificate_is_a_connect_error(run: Runner, certs: Certs) -> None:
    async def scenario() -> None:
        async with tls_upstream(certs, answering(lambda req: ok(b"x"))) as up:
            pool = Pool(localhost(up))  # the default context: system CAs only
            try:
                with pytest.raises(ConnectError, match="certificate") as info:
                    await pool.request("GET", "/", b"")
                assert f"localhost:{up.port}" in info.value.message
                assert pool.connections_open == 0
            finally:
                await pool.close()
            assert up.requests == []  # nothing was sent over the unverified connection

    run(scenario)


def test_tls_host_name_mismatch_is_a_connect_error(run: Runner, certs: Certs) -> None:
    async def scenario() -> None:
        async with tls_upstream(certs, answering(lambda req: ok(b"x"))) as up:
            pool = Pool(f"https://127.0.0.1:{up.port}", ssl_context=certs.client_context())
            try:
                with pytest.raises(ConnectError, match="certificate"):
                    await pool.request("GET", "/", b"")
                assert pool.connections_open == 0
            finally:
                await pool.close()
            assert up.requests == []

    run(scenario)


def test_tls_body_until_close(run: Runner, certs: Certs) -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
            peer.close()

    async def scenario() -> None:
        async with tls_upstream(certs, handler) as up:
            pool = Pool(localhost(up), ssl_context=certs.client_context())
            try:
                assert await (await pool.request("GET", "/", b"")).read() == b"until the end"
            finally:
                await pool.close()

    run(scenario)


def test_tls_stale_connection_is_retried(run: Runner, certs: Certs) -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(ok(b"answer"))
        await peer.request()
        peer.close()

    async def scenario() -> None:
        async with tls_upstream(certs, handler) as up:
            pool = Pool(localhost(up), ssl_context=certs.client_context())
            try:
                for _ in range(3):
                    assert await (await pool.request("POST", "/", b"", b"{}")).read() == b"answer"
            finally:
                await pool.close()
            assert up.connections == 3

    run(scenario)


def test_tls_back_pressure_keeps_every_byte(run: Runner, certs: Certs) -> None:
    payload = hashlib.sha256(b"tls").digest() * (4 * 1024 * 1024 // 32)

    async def scenario() -> None:
        async with tls_upstream(certs, answering(lambda req: ok(payload))) as up:
            pool = Pool(localhost(up), ssl_context=certs.client_context(), read_high_water=32 * 1024)
            try:
                resp = await pool.request("GET", "/", b"")
                digest = hashlib.sha256()
                peak = 0
                while chunk := await resp.readany():
                    digest.update(chunk)
                    await asyncio.sleep(0.001)
                    peak = max(peak, resp.buffered)
                assert digest.digest() == hashlib.sha256(payload).digest()
                assert peak <= 32 * 1024 + 512 * 1024, peak
            finally:
                await pool.close()

    run(scenario)


# -- proxies ---------------------------------------------------------------------------------------


@dataclass
class Proxy:
    """A tiny real HTTP proxy: ``CONNECT`` tunnels (or a refusal with ``refuse_status``), and
    plain-HTTP requests answered by ``forward`` (it sees what the origin would have seen)."""

    refuse_status: int | None = None
    forward: Callable[[Req], bytes] = lambda req: ok(b"via proxy")
    seen: list[Req] = field(default_factory=list)
    tunnels: int = 0
    upstream: Upstream | None = None

    async def __aenter__(self) -> Proxy:
        self.upstream = await Upstream(self._handle).__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.upstream is not None
        await self.upstream.__aexit__(*exc)

    @property
    def url(self) -> str:
        assert self.upstream is not None
        return f"http://127.0.0.1:{self.upstream.port}"

    def url_with(self, userinfo: str) -> str:
        assert self.upstream is not None
        return f"http://{userinfo}@127.0.0.1:{self.upstream.port}"

    async def _handle(self, peer: Peer) -> None:
        while (req := await peer.request()) is not None:
            self.seen.append(req)
            if req.method != "CONNECT":
                await peer.send(self.forward(req))
                continue
            if self.refuse_status is not None:
                await peer.send(ok(b"no", status=b"%d Refused" % self.refuse_status))
                return
            await self._tunnel(peer, req.target)
            return

    async def _tunnel(self, peer: Peer, target: str) -> None:
        host, port = target.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        self.tunnels += 1
        await peer.send(b"HTTP/1.1 200 Connection established\r\n\r\n")

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        try:
            await asyncio.gather(pipe(peer.reader, writer), pipe(reader, peer.writer))
        finally:
            writer.close()


def test_https_through_connect_proxy_with_auth(run: Runner, certs: Certs) -> None:
    async def scenario() -> None:
        async with tls_upstream(certs, answering(lambda req: ok(b"secret answer"))) as up, Proxy() as proxy:
            pool = Pool(
                localhost(up),
                ssl_context=certs.client_context(),
                proxy=proxy.url_with("alice:p%40ss"),
            )
            try:
                for _ in range(3):
                    resp = await pool.request("POST", "/v1/x", b"", b"{}")
                    assert await resp.read() == b"secret answer"
            finally:
                await pool.close()
            assert proxy.tunnels == 1  # the tunnel is a kept-alive connection like any other
            connect = proxy.seen[0]
            assert connect.method == "CONNECT"
            assert connect.target == f"localhost:{up.port}"
            assert connect.headers["host"] == f"localhost:{up.port}"
            expected = base64.b64encode(b"alice:p@ss").decode()
            assert connect.headers["proxy-authorization"] == f"Basic {expected}"
            # Inside the tunnel: an origin-form request, and the proxy credentials never reach the origin.
            assert up.requests[0].target == "/v1/x"
            assert "proxy-authorization" not in up.requests[0].headers

    run(scenario)


def test_connect_refused_by_proxy_names_status_not_credentials(run: Runner, certs: Certs) -> None:
    async def scenario() -> None:
        async with Proxy(refuse_status=407) as proxy:
            pool = Pool("https://api.example.com", proxy=proxy.url_with("bob:hunter2"))
            try:
                with pytest.raises(ConnectError) as info:
                    await pool.request("GET", "/", b"")
                message = info.value.message
                assert "407" in message and "api.example.com:443" in message
                assert "hunter2" not in message and "bob" not in message
                assert pool.connections_open == 0
            finally:
                await pool.close()

    run(scenario)


def test_unreachable_proxy_is_a_connect_error(run: Runner, closed_port: int) -> None:
    async def scenario() -> None:
        for url in ("https://api.example.com", "http://api.example.com"):
            pool = Pool(url, proxy=f"http://u:pw@127.0.0.1:{closed_port}")
            try:
                with pytest.raises(ConnectError, match=f"proxy 127.0.0.1:{closed_port}") as info:
                    await pool.request("GET", "/", b"")
                assert "pw" not in info.value.message
            finally:
                await pool.close()

    run(scenario)


def test_http_through_proxy_uses_absolute_form_and_proxy_auth(run: Runner) -> None:
    async def scenario() -> None:
        async with Proxy() as proxy:
            pool = Pool("http://backend.internal:8000/api", proxy=proxy.url_with("carol:s3cret"))
            try:
                headers = pool.prepare_headers({"Authorization": "Bearer upstream-key"})
                for _ in range(2):
                    assert await (await pool.request("POST", "/chat", headers, b"{}")).read() == b"via proxy"
            finally:
                await pool.close()
            assert proxy.upstream is not None and proxy.upstream.connections == 1
            req = proxy.seen[0]
            assert req.method == "POST"
            assert req.target == "http://backend.internal:8000/api/chat"
            assert req.headers["host"] == "backend.internal:8000"
            assert req.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"carol:s3cret").decode()
            assert req.headers["authorization"] == "Bearer upstream-key"

    run(scenario)


def test_no_proxy_is_respected_through_proxy_for(run: Runner) -> None:
    async def scenario() -> None:
        async with Upstream(answering(lambda req: ok(b"direct"))) as up, Proxy() as proxy:
            env = {"HTTP_PROXY": proxy.url, "NO_PROXY": "localhost,127.0.0.1"}
            direct = Pool(up.url, proxy=proxy_for(up.url, env))
            proxied_url = "http://backend.internal:8000"
            proxied = Pool(proxied_url, proxy=proxy_for(proxied_url, env))
            try:
                assert await (await direct.request("GET", "/", b"")).read() == b"direct"
                assert await (await proxied.request("GET", "/", b"")).read() == b"via proxy"
            finally:
                await direct.close()
                await proxied.close()
            assert up.requests[0].target == "/"
            assert [r.target for r in proxy.seen] == ["http://backend.internal:8000/"]

    run(scenario)


def test_proxy_without_scheme_means_http() -> None:
    assert Pool("https://api.example.com", proxy="127.0.0.1:3128")._proxy == ("127.0.0.1", 3128)


def test_unsupported_proxies_are_refused_at_construction() -> None:
    for proxy in ("https://proxy:3128", "socks5://proxy:1080"):
        with pytest.raises(ValueError, match="proxies"):
            Pool("https://api.example.com", proxy=proxy)
