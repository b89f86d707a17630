"""The mock LLM upstream over real sockets on 127.0.0.1, plus its parser and flow control sans-IO.

Servers run on a uvloop loop in a background thread; every wait is on a socket read, a future's
result or a process's output, never on a sleep.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import openai
import pytest
import trustme
import uvloop

from agw_fast.core.http1 import ChunkedScanner, decode_chunked
from agw_fast.mockllm import (
    MockLLMConfig,
    pseudo_random_bytes,
    request_log,
    run_mock_llm,
    serve_mock_llm,
)
from agw_fast.mockllm.parser import ParseError, RequestParser
from agw_fast.mockllm.responses import MockApp
from agw_fast.mockllm.server import MockLLMProtocol

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hello, please."}]}


class ServerThread:
    """A mock server on its own uvloop loop in a daemon thread."""

    def __init__(self, config: MockLLMConfig, context: ssl.SSLContext | None = None) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        start = serve_mock_llm("127.0.0.1", 0, config, context)
        self.server = asyncio.run_coroutine_threadsafe(start, self.loop).result(10)
        self.port: int = self.server.sockets[0].getsockname()[1]
        self.url = f"{'https' if context else 'http'}://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def mock() -> Iterator[ServerThread]:
    server = ServerThread(MockLLMConfig(record=True))
    yield server
    server.close()


@pytest.fixture(scope="module")
def slow() -> Iterator[ServerThread]:
    server = ServerThread(MockLLMConfig(chunks=3, chunk_delay=0.1))
    yield server
    server.close()


# -- raw HTTP/1.1 client helpers -------------------------------------------------------------


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(reader: BinaryIO) -> tuple[int, list[tuple[str, str]], bytes]:
    """One response: status, headers, de-chunked body (close-delimited if unframed)."""
    status_line = reader.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers: list[tuple[str, str]] = []
    while (line := reader.readline()) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.lower(), value.strip()))
    fields = dict(headers)
    if status in (100, 204, 304):
        return status, headers, b""
    if fields.get("transfer-encoding") == "chunked":
        # Line by line: the last line read is the one that ends the body, nothing past it.
        parts: list[bytes] = []
        scanner = ChunkedScanner(parts.append)
        while scanner.feed(line := reader.readline()) == -1:
            assert line, "closed inside a chunked body"
        return status, headers, b"".join(parts)
    if "content-length" in fields:
        return status, headers, reader.read(int(fields["content-length"]))
    return status, headers, reader.read()


def exchange(port: int, raw: bytes) -> tuple[int, list[tuple[str, str]], bytes, bytes]:
    """Send `raw` on a fresh connection; one response plus whatever follows until EOF."""
    with connect(port) as sock, sock.makefile("rb") as reader:
        sock.sendall(raw)
        status, headers, body = read_response(reader)
        return status, headers, body, reader.read()


def chat_request(body: dict[str, Any], extra: bytes = b"") -> bytes:
    data = json.dumps(body).encode()
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: mock\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n%s\r\n%s" % (len(data), extra, data)
    )


# -- chat completions ------------------------------------------------------------------------


def test_non_streaming_completion(mock: ServerThread) -> None:
    with httpx.Client(base_url=mock.url) as client:
        response = client.post("/v1/chat/completions", json=BODY)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert 250 < len(response.content) < 450  # the size of a short real OpenAI reply
    doc = response.json()
    assert doc["object"] == "chat.completion"
    assert doc["model"] == "gpt-4o-mini"
    assert doc["choices"][0]["message"] == {
        "role": "assistant", "content": "Hello from the mock LLM.", "refusal": None
    }
    assert doc["choices"][0]["finish_reason"] == "stop"
    prompt = len("Say hello, please.") // 4 + 1
    assert doc["usage"] == {"prompt_tokens": prompt, "completion_tokens": 5,
                            "total_tokens": prompt + 5}


def test_model_defaults_and_other_paths(mock: ServerThread) -> None:
    with httpx.Client(base_url=mock.url) as client:
        first = client.post("/compatibility/v1/chat/completions", json={"messages": []})
        again = client.post("/compatibility/v1/chat/completions", json={"messages": []})
        wrong = client.get("/v1/chat/completions")
    assert first.json()["model"] == "mock-gpt"
    assert again.content == first.content  # served from the cache, same bytes
    assert wrong.status_code == 405


def test_invalid_json_is_openai_style_400(mock: ServerThread) -> None:
    with httpx.Client(base_url=mock.url) as client:
        response = client.post("/v1/chat/completions", content=b"{not json")
        array = client.post("/v1/chat/completions", json=[1, 2])
        after = client.get("/v1/models")  # the connection is still usable
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and "JSON" in error["message"]
    assert array.status_code == 400
    assert after.status_code == 200


def test_streaming_with_openai_sdk(mock: ServerThread) -> None:
    with openai.OpenAI(base_url=mock.url + "/v1", api_key="x", max_retries=0) as client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Say hello, please."}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert len(chunks) == 1 + 5 + 1 + 1  # role, content deltas, finish, usage
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from the mock LLM."
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.model == "gpt-4o-mini" for c in chunks)


def test_stream_framing_without_usage(mock: ServerThread) -> None:
    raw = chat_request({**BODY, "stream": True}, b"Connection: close\r\n")
    status, headers, body, _ = exchange(mock.port, raw)
    assert status == 200
    assert ("content-type", "text/event-stream") in headers
    assert ("transfer-encoding", "chunked") in headers
    events = body.split(b"\n\n")
    assert events[-2:] == [b"data: [DONE]", b""]
    docs = [json.loads(e[len(b"data: ") :]) for e in events[:-2]]
    assert len(docs) == 7
    assert all("usage" not in d for d in docs)


def test_chunk_delay_spreads_events(slow: ServerThread) -> None:
    # 3 content deltas: role, 3 deltas, finish, [DONE] = 6 events, 5 gaps of 0.1 s.
    with connect(slow.port) as sock:
        sent = time.monotonic()
        sock.sendall(chat_request({**BODY, "stream": True}))
        arrivals: list[float] = []
        data = b""
        while not data.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece
            arrivals.extend(time.monotonic() for _ in range(piece.count(b"data: ")))
            data += piece
    assert len(arrivals) == 6
    first, last = arrivals[0] - sent, arrivals[-1] - sent
    assert last - first >= 0.4  # nominal 0.5 s
    assert first < last - 0.3  # the first event did not wait for a delay


def test_http10_stream_is_close_delimited(mock: ServerThread) -> None:
    raw = chat_request({**BODY, "stream": True}).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
    status, headers, body, _ = exchange(mock.port, raw)
    assert status == 200
    assert "transfer-encoding" not in dict(headers)
    assert ("connection", "close") in headers
    assert body.endswith(b"data: [DONE]\n\n")


# -- other endpoints -------------------------------------------------------------------------


def test_models(mock: ServerThread) -> None:
    doc = httpx.get(mock.url + "/v1/models").json()
    assert doc["object"] == "list"
    assert [(m["id"], m["object"], m["owned_by"]) for m in doc["data"]] == [
        ("mock-gpt", "model", "agw-fast-mock")
    ]


def test_echo_reports_headers_in_wire_order(mock: ServerThread) -> None:
    raw = (
        b"PUT /echo/x?a=1&b=2 HTTP/1.1\r\nHost: mock\r\nX-B: 2\r\nx-a:  1 \r\nX-B: 3\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    status, _, body, _ = exchange(mock.port, raw + b"GET /echo HTTP/1.1\r\nHost: m\r\n"
                                  b"Connection: close\r\n\r\n")
    doc = json.loads(body)
    assert status == 200
    assert doc["method"] == "PUT" and doc["target"] == "/echo/x?a=1&b=2"
    assert doc["http_version"] == "HTTP/1.1"
    assert doc["headers"] == [["Host", "mock"], ["X-B", "2"], ["x-a", "1"], ["X-B", "3"],
                              ["Content-Length", "5"]]
    assert doc["body_length"] == 5
    assert doc["body_sha256"] == hashlib.sha256(b"hello").hexdigest()


def test_echo_decodes_chunked_request_body(mock: ServerThread) -> None:
    raw = (
        b"POST /echo HTTP/1.1\r\nHost: m\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"3;ext=1\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
    )
    doc = json.loads(exchange(mock.port, raw)[2])
    assert doc["body_length"] == 7
    assert doc["body_sha256"] == hashlib.sha256(b"abcdefg").hexdigest()


@pytest.mark.parametrize("size", [0, 1, 65536, 1_000_003])
def test_bytes_and_chunked_payloads(mock: ServerThread, size: int) -> None:
    expected = hashlib.sha256(pseudo_random_bytes(size)).hexdigest()
    with httpx.Client(base_url=mock.url) as client:
        fixed = client.get(f"/bytes/{size}")
        chunked = client.get(f"/chunked/{size}")
    assert fixed.headers["content-length"] == str(size)
    assert chunked.headers["transfer-encoding"] == "chunked"
    assert hashlib.sha256(fixed.content).hexdigest() == expected
    assert hashlib.sha256(chunked.content).hexdigest() == expected


def test_pseudo_random_bytes_are_stable() -> None:
    data = pseudo_random_bytes(3 * 1024 * 1024 + 5)
    assert data[: 1 << 20] == data[1 << 20 : 2 << 20]  # 1 MiB period
    assert len(set(data[:4096])) > 200  # not a constant fill
    assert pseudo_random_bytes(16) == data[:16]


def test_status_endpoint(mock: ServerThread) -> None:
    with httpx.Client(base_url=mock.url) as client:
        teapot = client.get("/status/418")
        empty = client.get("/status/204")
        bad = client.get("/status/99")
        missing = client.get("/nowhere")
    assert teapot.status_code == 418 and teapot.json() == {"status": 418}
    assert empty.status_code == 204 and empty.content == b""
    assert bad.status_code == 400
    assert missing.status_code == 404 and "error" in missing.json()


def test_record_keeps_requests(mock: ServerThread) -> None:
    log = request_log(mock.server)
    log.clear()
    httpx.post(mock.url + "/echo/rec", content=b"payload", headers={"X-Test": "1"})
    [recorded] = [r for r in log.requests if r.target == "/echo/rec"]
    assert recorded.method == "POST" and recorded.body == b"payload"
    assert ("X-Test", "1") in recorded.headers


# -- connection handling ---------------------------------------------------------------------


def test_keep_alive_two_requests_on_one_connection(mock: ServerThread) -> None:
    with connect(mock.port) as sock, sock.makefile("rb") as reader:
        sock.sendall(chat_request(BODY))
        assert read_response(reader)[0] == 200
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: mock\r\n\r\n")
        status, _, body = read_response(reader)
        assert status == 200 and b'"list"' in body


def test_pipelined_requests_answered_in_order(slow: ServerThread) -> None:
    # A slow stream in the middle must hold back the replies pipelined behind it.
    raw = (
        b"GET /status/201 HTTP/1.1\r\nHost: m\r\n\r\n"
        + chat_request({**BODY, "stream": True})
        + b"GET /echo/third HTTP/1.1\r\nHost: m\r\n\r\n"
        + chat_request(BODY)
        + b"GET /status/202 HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    with connect(slow.port) as sock, sock.makefile("rb") as reader:
        sock.sendall(raw)
        replies = [read_response(reader) for _ in range(5)]
        assert reader.read() == b""  # closed after the Connection: close request
    assert [r[0] for r in replies] == [201, 200, 200, 200, 202]
    assert replies[1][2].endswith(b"data: [DONE]\n\n")
    assert json.loads(replies[2][2])["target"] == "/echo/third"
    assert json.loads(replies[3][2])["object"] == "chat.completion"


def test_connection_close_is_honoured(mock: ServerThread) -> None:
    status, headers, _, rest = exchange(
        mock.port, b"GET /v1/models HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n"
    )
    assert status == 200 and ("connection", "close") in headers and rest == b""


def test_half_closed_client_still_gets_the_stream(slow: ServerThread) -> None:
    with connect(slow.port) as sock, sock.makefile("rb") as reader:
        sock.sendall(chat_request({**BODY, "stream": True}))
        sock.shutdown(socket.SHUT_WR)
        status, _, body = read_response(reader)
        assert status == 200 and body.endswith(b"data: [DONE]\n\n")
        assert reader.read() == b""


def test_expect_100_continue(mock: ServerThread) -> None:
    with connect(mock.port) as sock, sock.makefile("rb") as reader:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: m\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert read_response(reader)[0] == 100
        sock.sendall(b"body")
        assert json.loads(read_response(reader)[2])["body_length"] == 4


@pytest.mark.parametrize(
    "raw",
    [
        b"NOT A REQUEST\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : m\r\n\r\n",  # space before the colon
        b"GET / HTTP/1.1\r\nHost: m\r\n folded\r\n\r\n",  # obs-fold
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\nY: b\r\n\r\n",  # bare LF inside the head
        b"GET / HTTP/1.1\nHost: m\n\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n",
        b"GET / HTTP/2.0\r\n\r\n",
    ],
)
def test_malformed_request_gets_400_and_close(mock: ServerThread, raw: bytes) -> None:
    status, headers, body, rest = exchange(mock.port, raw + b"GET /v1/models HTTP/1.1\r\n\r\n")
    assert status == 400
    assert ("connection", "close") in headers
    assert "error" in json.loads(body)
    assert rest == b""  # nothing after the error: the connection was closed


def test_oversized_head_gets_431(mock: ServerThread) -> None:
    raw = b"GET / HTTP/1.1\r\nX: " + b"a" * (70 * 1024) + b"\r\n\r\n"
    assert exchange(mock.port, raw)[0] == 431


def test_tcp_nodelay_on_accepted_connections(
    mock: ServerThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    original = MockLLMProtocol.connection_made

    def spy(self: MockLLMProtocol, transport: asyncio.BaseTransport) -> None:
        sock = transport.get_extra_info("socket")
        seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        original(self, transport)

    monkeypatch.setattr(MockLLMProtocol, "connection_made", spy)
    assert exchange(mock.port, b"GET /v1/models HTTP/1.1\r\nConnection: close\r\n\r\n")[0] == 200
    assert seen == [1]


def test_tls_with_trustme(tmp_path: Path) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    server = ServerThread(MockLLMConfig(), server_context)
    try:
        # httpx 0.28 deprecates verify=<path>; a context built from the CA file is the same check.
        verify = ssl.create_default_context(cafile=str(ca_path))
        with httpx.Client(base_url=server.url, verify=verify) as client:
            models = client.get("/v1/models")
            stream = client.post("/v1/chat/completions", json={**BODY, "stream": True})
            big = client.get("/chunked/300000")
    finally:
        server.close()
    assert models.status_code == 200
    assert stream.text.endswith("data: [DONE]\n\n")
    assert big.content == pseudo_random_bytes(300000)


# -- sans-IO parser and flow control ---------------------------------------------------------


def test_parser_handles_every_split_point() -> None:
    stream = (
        b"\r\nPOST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
        b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nhi\r\n1;x=y\r\n!\r\n0\r\nT: 1\r\n\r\n"
        b"GET /c HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
    )
    expected = [(b"/a", b"abc", True), (b"/b", b"hi!", True), (b"/c", b"", True)]
    splits = [[stream[:i], stream[i:]] for i in range(len(stream) + 1)]
    for pieces in [*splits, [bytes([b]) for b in stream]]:
        parser = RequestParser()
        got = []
        for piece in pieces:
            parser.feed(piece)
            while (request := parser.next_request()) is not None:
                got.append((request.target, request.body, request.keep_alive))
        assert got == expected
        assert parser.idle


def test_parser_limits() -> None:
    parser = RequestParser()
    parser.feed(b"POST / HTTP/1.1\r\nContent-Length: 999999999999\r\n\r\n")
    with pytest.raises(ParseError) as info:
        parser.next_request()
    assert info.value.status == 413


class FakeTransport(asyncio.Transport):
    """Collects writes and applies a high-water mark like a real transport."""

    def __init__(self, protocol: MockLLMProtocol, high_water: int) -> None:
        super().__init__()
        self.protocol = protocol
        self.high_water = high_water
        self.buffer = bytearray()
        self.paused = False
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.buffer += data
        if not self.paused and len(self.buffer) > self.high_water:
            self.paused = True
            self.protocol.pause_writing()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def drain(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        if self.paused:
            self.paused = False
            self.protocol.resume_writing()
        return data

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def close(self) -> None:
        self.closed = True


def test_chunked_body_respects_backpressure() -> None:
    loop = asyncio.new_event_loop()
    try:
        protocol = MockLLMProtocol(MockApp(MockLLMConfig()), loop)
        transport = FakeTransport(protocol, high_water=100_000)
        protocol.connection_made(transport)
        size = 1_000_003
        protocol.data_received(b"GET /chunked/%d HTTP/1.1\r\nConnection: close\r\n\r\n" % size)
        received = bytearray()
        rounds = 0
        while not transport.closed:
            # Paused after at most one piece beyond the mark: nothing piles up in memory.
            assert len(transport.buffer) < 100_000 + 70_000
            received += transport.drain()
            rounds += 1
        received += transport.drain()
    finally:
        loop.close()
    assert rounds > 5
    head, _, body = bytes(received).partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head
    decoded, end = decode_chunked(body)
    assert end == len(body)
    assert decoded == pseudo_random_bytes(size)


# -- CLI -------------------------------------------------------------------------------------


def start_cli(*args: str) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "agw_fast.mockllm", "--port", "0", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 30)
    assert ready, "mock-llm did not announce itself"
    line = process.stdout.readline().strip()
    return process, line


def stop_cli(process: subprocess.Popen[str], signum: int = signal.SIGTERM) -> int:
    process.send_signal(signum)
    code = process.wait(30)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    process.stderr.close()
    return code


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_serves_and_exits_cleanly(workers: int) -> None:
    process, line = start_cli("--workers", str(workers), "--chunks", "2")
    try:
        assert line.startswith("mock-llm listening on http://127.0.0.1:")
        url = line.rsplit(" ", 1)[1]
        for _ in range(4):
            with httpx.Client(base_url=url) as client:
                stream = client.post("/v1/chat/completions", json={**BODY, "stream": True})
            assert stream.text.count("data: ") == 5
    finally:
        code = stop_cli(process, signal.SIGINT if workers == 1 else signal.SIGTERM)
    assert code == 0


def test_cli_tls(tmp_path: Path) -> None:
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    cert, key, ca_path = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_path))
    process, line = start_cli("--tls", "--cert", str(cert), "--key", str(key))
    try:
        assert line.startswith("mock-llm listening on https://127.0.0.1:")
        verify = ssl.create_default_context(cafile=str(ca_path))
        response = httpx.get(line.rsplit(" ", 1)[1] + "/v1/models", verify=verify)
        assert response.status_code == 200
    finally:
        assert stop_cli(process) == 0


def test_cli_tls_requires_cert_and_key(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_mock_llm(["--tls"]) == 2
    assert "--tls needs --cert FILE and --key FILE" in capsys.readouterr().err
    assert run_mock_llm(["--chunks", "-1"]) == 2
    assert "chunks must be >= 0" in capsys.readouterr().err


# -- gzip (as the OpenAI API answers the SDK) -------------------------------------------------


def _handle(app: MockApp, body: dict[str, Any], *headers: bytes) -> Any:
    data = json.dumps(body).encode()
    parser = RequestParser()
    parser.feed(b"POST /v1/chat/completions HTTP/1.1\r\nHost: m\r\n%sContent-Length: %d\r\n\r\n%s"
                % (b"".join(h + b"\r\n" for h in headers if h), len(data), data))
    request = parser.next_request()
    assert request is not None
    return app.handle(request)


@pytest.mark.parametrize(
    ("accept", "gzipped"),
    [(b"accept-encoding: gzip, deflate", True), (b"Accept-Encoding: br;q=1, *", True),
     (b"accept-encoding: gzip;q=0", False), (b"accept-encoding: identity", False), (b"", False)],
)
def test_gzip_when_the_request_accepts_it(accept: bytes, gzipped: bool) -> None:
    app = MockApp(MockLLMConfig(gzip=True))
    for _ in range(2):  # and the cached reply is the same
        reply = _handle(app, BODY, accept)
        head, _, body = reply.partition(b"\r\n\r\n")
        assert (b"content-encoding: gzip" in head) == gzipped
        doc = json.loads(gzip.decompress(body) if gzipped else body)
        assert doc["usage"]["completion_tokens"] == 5


def test_gzip_stream_is_flushed_per_event() -> None:
    app = MockApp(MockLLMConfig(gzip=True))
    reply = _handle(app, {**BODY, "stream": True}, b"accept-encoding: gzip")
    assert b"content-encoding: gzip" in reply.head
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
    for event in reply.events:
        payload, _ = decode_chunked(event if event.endswith(b"0\r\n\r\n") else event + b"0\r\n\r\n")
        # Each event decodes on its own: nothing is held back in the compressor.
        assert decoder.decompress(payload).startswith(b"data: ")
    assert decoder.eof
    assert not MockApp(MockLLMConfig()).config.gzip  # off unless asked for
