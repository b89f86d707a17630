"""Shared limits (`--limits`): two agw-fast instances of two workers each against one real
redis-server. A request limit and a per-key token budget hold across both within the
documented bound (policies/shared_limits.py) under concurrent load; with Redis killed, a
failClosed instance answers 500 `rate limit failed` once its leases are spent while a failOpen
one lets requests through; the metric and the log say so; a restarted Redis is used again
without restarting the gateways."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    Upstream,
    UpstreamConnection,
    ai_route,
    http_response,
    metric_total,
    poll,
    scrape_metrics,
    wait_until,
)

REDIS_SERVER = shutil.which("redis-server") or "/usr/sbin/redis-server"
pytestmark = [
    pytest.mark.skipif(
        not Path(REDIS_SERVER).exists(),
        reason="redis-server missing (apt-get install redis-server)",
    ),
    pytest.mark.timeout(120),
]
pytest.importorskip("redis", reason="the `redis` extra: pip install 'agw-fast[redis]'")

INSTANCES, WORKERS, CREDIT, LEASE = 2, 2, 4, 64
MAX_LEASE_GROWTH = 32  # policies/shared_limits.py: a lease doubles up to 32 x lease.size
BOUND = INSTANCES * WORKERS * CREDIT  # overshoot per fill interval, documented
CAPACITY = 300
BUDGET, USAGE = 1000, 50  # tokens per team; each call's usage (30 in + 20 out)
CALLS_IN_FLIGHT = 16  # concurrent LLM clients

COMPLETION = json.dumps(
    {
        "id": "c1", "object": "chat.completion", "model": "command",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 20, "total_tokens": 50},
    }
).encode()


def _complete(conn: UpstreamConnection) -> None:
    while conn.read_request() is not None:
        conn.send(http_response(200, COMPLETION, [("Content-Type", "application/json")]))


class RedisServer:
    """A real redis-server on a fixed port, without persistence: a restart forgets the
    buckets, which is the documented worst case."""

    def __init__(self, tmp: Path) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.tmp / "redis.log", "ab")  # noqa: SIM115 (the process keeps it)
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"],
            stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        wait_until(self._accepting, what="redis-server accepting")

    def _accepting(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def command(self, *args: str) -> str:
        out = subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, check=True
        )
        return out.stdout.decode().strip()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.kill()


def _config(upstream_port: int, stats: bool = False) -> str:
    import yaml

    plain = {"host": "127.0.0.1", "authority": None, "auth_key": None}
    llm = ai_route(upstream_port, match_prefix="/llm", name="llm", **plain)
    routes = [
        {
            "name": "limited",
            "matches": [{"path": {"pathPrefix": "/limited"}}],
            "policies": {
                "localRateLimit": [
                    {"maxTokens": CAPACITY, "tokensPerFill": 1, "fillInterval": "3600s"}
                ],
                "directResponse": {"status": 200, "body": "ok"},
            },
        },
        {
            # Never runs dry: a request here needs Redis only when its worker's lease is spent.
            "name": "outage",
            "matches": [{"path": {"pathPrefix": "/outage"}}],
            "policies": {
                "localRateLimit": [
                    {"maxTokens": 10**9, "tokensPerFill": 10**9, "fillInterval": "3600s"}
                ],
                "directResponse": {"status": 200, "body": "ok"},
            },
        },
        llm,
    ]
    config = {
        "statsAddr": "127.0.0.1:0" if stats else "off",
        "adminAddr": "off",
        "readinessAddr": "off",
    }
    doc = {"config": config, "binds": [{"port": 0, "listeners": [{"routes": routes}]}]}
    return str(yaml.safe_dump(doc, sort_keys=False))


def _limits(tmp: Path, redis_port: int, mode: str = "failClosed") -> list[str]:
    path = tmp / f"limits-{mode}.yaml"
    path.write_text(f"""redis: {{url: "redis://127.0.0.1:{redis_port}/0", keyPrefix: "t:",
         timeout: 300ms, connectTimeout: 300ms}}
failureMode: {mode}
shareLocalRateLimits: true
lease: {{size: {LEASE}, credit: {CREDIT}, idle: 30s, retry: 200ms}}
budgets:
- name: team-tokens
  key: request.headers["x-team"]
  type: tokens
  maxTokens: {BUDGET}
  fillInterval: 3600s
  routes: [llm]
""")
    return ["--limits", str(path)]


async def _burst(
    ports: list[int], request: bytes, total: int, connections: int
) -> list[tuple[int, bytes]]:
    """`total` requests over `connections` keep-alive connections spread over `ports`, all
    sending at once, one request in flight per connection: (status, body) of each."""
    streams = [
        await asyncio.open_connection("127.0.0.1", ports[i % len(ports)])
        for i in range(connections)
    ]
    answers: list[tuple[int, bytes]] = []

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for _ in range(n):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            answers.append((int(lines[0].split(" ", 2)[1]), body))
        writer.close()

    share, extra = divmod(total, connections)
    tasks = [
        asyncio.create_task(client(r, w, share + (1 if i < extra else 0)))
        for i, (r, w) in enumerate(streams)
    ]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=90)
    return answers


def _get(path: str) -> bytes:
    return b"GET %s HTTP/1.1\r\nhost: fleet.test\r\n\r\n" % path.encode()


def _chat(team: str) -> bytes:
    body = json.dumps({"model": "command", "messages": [{"role": "user", "content": "hi"}]})
    return (
        f"POST /llm/v1/chat/completions HTTP/1.1\r\nhost: fleet.test\r\nx-team: {team}\r\n"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _fleet(gateway: GatewayFactory, config: str, *limits: list[str]) -> list[Process]:
    return [
        gateway(config, workers=WORKERS, extra_args=args, expect_stats="statsAddr: 127.0.0.1:0"
                in config)
        for args in limits
    ]


def test_request_limit_and_token_budget_hold_across_two_instances(
    gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    with Upstream(_complete) as upstream:
        args = _limits(tmp_path, redis_server.port)
        fleet = _fleet(gateway, _config(upstream.port), args, args)
        ports = [gw.port for gw in fleet]

        answers = asyncio.run(_burst(ports, _get("/limited"), 2000, 64))
        allowed = sum(1 for status, _ in answers if status == 200)
        refused = [body for status, body in answers if status == 429]
        assert allowed + len(refused) == 2000
        assert set(refused) == {b"rate limit exceeded"}
        # The documented bound: never more than the bucket plus each worker's credit.
        assert allowed <= CAPACITY + BOUND, allowed

        calls = asyncio.run(_burst(ports, _chat("alpha"), 200, CALLS_IN_FLIGHT))
        ok = sum(1 for status, _ in calls if status == 200)
        assert {status for status, _ in calls} == {200, 429}
        # Calls start while the budget has a token (as agentgateway: those in flight when it
        # runs out finish and are charged), plus at most the credit of every worker.
        assert BUDGET // USAGE <= ok <= BUDGET // USAGE + CALLS_IN_FLIGHT + BOUND, ok
        # Another key has its own budget, on either instance.
        other = asyncio.run(_burst(ports, _chat("beta"), 4, 2))
        assert [status for status, _ in other] == [200] * 4

        # Stopping returns the workers' unspent leases: every token of the request limit is
        # then either spent or back in Redis (nothing lost), and the API key never reaches
        # Redis in clear (keys carry a digest).
        for gw in fleet:
            assert gw.stop() == 0
    keys = redis_server.command("--scan", "--pattern", "t:*").split()
    assert "t:route:bind/0/listener0/default/limited:0" in keys
    assert not any("alpha" in key or "beta" in key for key in keys)
    assert sum(1 for key in keys if key.startswith("t:budget:team-tokens:")) == 2
    left = int(redis_server.command("hget", "t:route:bind/0/listener0/default/limited:0", "t"))
    # (Credit spent while the bucket had fewer tokens is the overshoot: it is within BOUND.)
    assert CAPACITY <= allowed + left <= CAPACITY + BOUND, (allowed, left)


def test_redis_outage_fails_closed_or_open_and_recovers(
    gateway: GatewayFactory, redis_server: RedisServer, tmp_path: Path
) -> None:
    with Upstream(_complete) as upstream:
        closed, opened = _fleet(
            gateway, _config(upstream.port, stats=True),
            _limits(tmp_path, redis_server.port, "failClosed"),
            _limits(tmp_path, redis_server.port, "failOpen"),
        )
        for gw in (closed, opened):
            warm = asyncio.run(_burst([gw.port], _get("/outage"), 40, 4))
            # (A worker whose lease and credit run out before Redis answers refuses: the
            # documented undershoot, which depends on timing; never a 500 while Redis is up.)
            assert 200 in {status for status, _ in warm} <= {200, 429}
            samples = scrape_metrics(gw.extra_ports["stats"])
            assert metric_total(samples, "agw_fast_shared_limits_store_up") == 1

        redis_server.kill()
        # failClosed: the leases the workers hold are spent (counted before the outage), then
        # every request that needs Redis gets agentgateway's RateLimitFailed answer. A lease
        # grows up to MAX_LEASE_GROWTH x its size when a worker ran dry (how far depends on
        # timing), so the burst outlasts the largest leases the workers can hold.
        held = WORKERS * (MAX_LEASE_GROWTH * LEASE + CREDIT)
        during = asyncio.run(_burst([closed.port], _get("/outage"), held + 200, 4))
        served = sum(1 for status, _ in during if status == 200)
        failed = [body for status, body in during if status == 500]
        assert served + len(failed) == held + 200
        assert served <= held
        assert failed and set(failed) == {b"rate limit failed"}
        # failOpen: let through.
        open_answers = asyncio.run(_burst([opened.port], _get("/outage"), 200, 4))
        assert {status for status, _ in open_answers} == {200}
        for gw in (closed, opened):
            poll(
                lambda gw=gw: scrape_metrics(gw.extra_ports["stats"]),
                lambda s: metric_total(s, "agw_fast_shared_limits_store_up") == 0
                and metric_total(s, "agw_fast_shared_limits_store_errors_total") > 0,
                what="store_up 0",
            )
            wait_until(lambda gw=gw: "shared limits store" in gw.output()
                       and "unreachable" in gw.output(), what="the outage logged")
        assert "answered 500 (failureMode: failClosed)" in closed.output()
        assert "let through (failureMode: failOpen)" in opened.output()

        redis_server.start()  # the same port, empty: the documented restart case
        for gw in (closed, opened):
            wait_until(lambda gw=gw: "reachable again" in gw.output(), what="recovery logged")
            poll(
                lambda gw=gw: scrape_metrics(gw.extra_ports["stats"]),
                lambda s: metric_total(s, "agw_fast_shared_limits_store_up") == 1,
                what="store_up 1",
            )
        after = asyncio.run(_burst([closed.port], _get("/outage"), 100, 4))
        assert 200 in {status for status, _ in after} <= {200, 429}
        # And the limits hold again across both instances (a fresh bucket in the new Redis;
        # no worker held a lease of it from the old one, which could add up to CAPACITY).
        started = time.monotonic()
        answers = asyncio.run(_burst([closed.port, opened.port], _get("/limited"), 800, 32))
        assert time.monotonic() - started < 3600  # no refill of the hourly bucket meanwhile
        allowed = sum(1 for status, _ in answers if status == 200)
        assert {status for status, _ in answers} == {200, 429}
        assert allowed <= CAPACITY + BOUND, allowed
