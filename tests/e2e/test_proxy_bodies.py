"""Message bodies through the gateway: large uploads and downloads byte for byte, both framings
each way, bodiless responses (HEAD, 204, 304) and `Expect: 100-continue`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agw_fast.mockllm import pseudo_random_bytes
from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawClient,
    gateway_client,
    http_request,
    proxy_config,
)

MiB = 1024 * 1024
UPLOAD_SIZE = 8 * MiB
DOWNLOAD_SIZE = 20 * MiB


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, plain_upstream: Process) -> Process:
    return module_gateway(proxy_config(plain_upstream.port))


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[httpx.Client]:
    with gateway_client(gw.port, timeout=DEADLINE * 3) as c:
        yield c


@pytest.fixture(scope="module")
def upload() -> bytes:
    return pseudo_random_bytes(UPLOAD_SIZE)[::-1]  # not what the mock would send back


def header(doc: dict[str, Any], name: str) -> list[str]:
    """Values of header `name` as the upstream received them."""
    return [value for key, value in doc["headers"] if key.lower() == name]


def test_upload_with_content_length(client: httpx.Client, upload: bytes) -> None:
    response = client.post("/echo/upload", content=upload)
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["body_length"] == UPLOAD_SIZE
    assert doc["body_sha256"] == hashlib.sha256(upload).hexdigest()
    assert header(doc, "content-length") == [str(UPLOAD_SIZE)]
    assert header(doc, "transfer-encoding") == []


def test_upload_chunked(client: httpx.Client, upload: bytes) -> None:
    def pieces() -> Iterator[bytes]:
        # Uneven pieces, so chunk boundaries fall everywhere.
        offset, step = 0, 1
        while offset < len(upload):
            yield upload[offset : offset + step]
            offset += step
            step = step * 7 % 200_003 + 1

    response = client.post("/echo/upload-chunked", content=pieces())
    assert response.status_code == 200, response.text
    doc = response.json()
    assert doc["body_length"] == UPLOAD_SIZE
    assert doc["body_sha256"] == hashlib.sha256(upload).hexdigest()
    assert header(doc, "transfer-encoding") == ["chunked"]
    assert header(doc, "content-length") == []


@pytest.mark.parametrize("kind", ["bytes", "chunked"])
def test_download(client: httpx.Client, kind: str) -> None:
    response = client.get(f"/{kind}/{DOWNLOAD_SIZE}")
    assert response.status_code == 200
    if kind == "bytes":
        assert response.headers["content-length"] == str(DOWNLOAD_SIZE)
    else:
        assert response.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.headers
    assert len(response.content) == DOWNLOAD_SIZE
    assert response.content == pseudo_random_bytes(DOWNLOAD_SIZE)


def test_streamed_download_arrives_in_order(client: httpx.Client) -> None:
    expected = pseudo_random_bytes(3 * MiB + 17)
    with client.stream("GET", f"/chunked/{len(expected)}") as response:
        received = b"".join(response.iter_raw())
    assert received == expected


@pytest.mark.parametrize(
    ("target", "framing"),
    [("/bytes/1000", ("content-length", "1000")), ("/chunked/1000", ("transfer-encoding",
                                                                    "chunked"))],
)
def test_head_relays_headers_but_no_body(
    gw: Process, target: str, framing: tuple[str, str]
) -> None:
    with RawClient(gw.port) as raw:
        head = raw.request(http_request("HEAD", target), head_request=True)
        assert head.status == 200
        assert head.header(framing[0]) == framing[1]
        assert head.body == b""
        # Had any body bytes been relayed, they would stand where this response's head is.
        follow_up = raw.request(http_request("GET", "/echo/after-head"))
        assert follow_up.start_line.startswith(b"HTTP/1.1 200"), follow_up.raw[:200]
        assert json.loads(follow_up.body)["target"] == "/echo/after-head"


@pytest.mark.parametrize("status", [204, 304])
def test_bodiless_statuses_keep_the_connection_in_sync(gw: Process, status: int) -> None:
    with RawClient(gw.port) as raw:
        response = raw.request(http_request("GET", f"/status/{status}"))
        assert response.status == status
        assert response.header("transfer-encoding") is None
        if status == 204:
            # RFC 9110 §8.6: no Content-Length in a 204.
            assert response.header("content-length") is None
        follow_up = raw.request(http_request("GET", f"/echo/after-{status}"))
        assert follow_up.start_line.startswith(b"HTTP/1.1 200"), follow_up.raw[:200]
        assert json.loads(follow_up.body)["target"] == f"/echo/after-{status}"


def test_expect_100_continue(gw: Process) -> None:
    body = pseudo_random_bytes(300_000)
    head = http_request(
        "POST",
        "/echo/continue",
        headers=[("Expect", "100-continue"), ("Content-Length", str(len(body)))],
        content_length=False,
    )
    with RawClient(gw.port) as raw:
        raw.send(head)
        interim = raw.reader.read_until(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 "), interim
        raw.send(body)
        response = raw.response()
        assert response.status == 200, response.raw[:300]
        doc = json.loads(response.body)
        assert doc["body_length"] == len(body)
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
        # The connection is still in sync for a next request.
        follow_up = raw.request(http_request("GET", "/echo/after-continue"))
        assert json.loads(follow_up.body)["target"] == "/echo/after-continue"


def test_small_post_bodies_of_every_framing(client: httpx.Client) -> None:
    for body in (b"", b"x", b"{}", bytes(range(256)) * 3):
        response = client.post("/echo/small", content=body)
        assert response.status_code == 200
        doc = response.json()
        assert doc["body_length"] == len(body)
        assert doc["body_sha256"] == hashlib.sha256(body).hexdigest()
