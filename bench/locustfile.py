"""Locust scenario: OpenAI-style clients against any agw-fast (or other gateway) deployment.

Locust is not a dependency of agw-fast: `pip install locust` in any environment, then

    locust -f bench/locustfile.py --host http://127.0.0.1:3000            # web UI on :8089
    locust -f bench/locustfile.py --host https://gw.example.com \\
        --headless -u 50 -r 10 -t 2m --csv /tmp/agw                       # CI-style run

Settings (environment variables):
    OPENAI_API_KEY      sent as `Authorization: Bearer ...` (default: a dummy key)
    AGW_BENCH_MODELS    comma-separated models to mix (default gpt-4o-mini,gpt-4o,gpt-4.1-nano)
    AGW_BENCH_PATH      chat completions path (default /v1/chat/completions)
    AGW_BENCH_MAX_TOKENS  max_tokens per request (default 64)
    AGW_BENCH_VERIFY    "0" to skip TLS verification (self-signed test deployments)

Users: `ChatUser` (non-streaming), `StreamingUser` (SSE; reports the time to first event and
the whole stream as separate `TTFE` and `STREAM` entries), `MixedUser` (both, across several
models). Pick classes on the command line (`locust -f bench/locustfile.py StreamingUser`) or let
Locust weight all three.
Locust tops out at a few thousand requests per second per core: use it for realistic mixes and
SSE correctness, and bench/run.py (wrk) to saturate a proxy.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

from locust import HttpUser, between, task

API_KEY = os.environ.get("OPENAI_API_KEY", "sk-locust-0000000000000000")
MODELS = [
    m.strip()
    for m in os.environ.get("AGW_BENCH_MODELS", "gpt-4o-mini,gpt-4o,gpt-4.1-nano").split(",")
    if m.strip()
]
CHAT_PATH = os.environ.get("AGW_BENCH_PATH", "/v1/chat/completions")
MAX_TOKENS = int(os.environ.get("AGW_BENCH_MAX_TOKENS", "64"))
VERIFY = os.environ.get("AGW_BENCH_VERIFY", "1") != "0"

_PROMPTS = (
    "Explain in one sentence why an HTTP proxy should reuse upstream connections.",
    "Give three short names for a fast Python gateway.",
    "Summarise the difference between SSE and WebSockets in two sentences.",
    "What does HTTP status 429 mean? Answer briefly.",
)


def _body(model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a terse assistant."},
            {"role": "user", "content": random.choice(_PROMPTS)},
        ],
        "max_tokens": MAX_TOKENS,
        "temperature": 0.2,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


class _OpenAIUser(HttpUser):
    abstract = True
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.client.verify = VERIFY
        self.client.headers.update(
            {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        )

    def chat(self, model: str) -> None:
        name = f"chat {model}"
        with self.client.post(
            CHAT_PATH, data=json.dumps(_body(model, stream=False)), name=name, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}: {response.text[:200]}")
                return
            try:
                doc = response.json()
                doc["choices"][0]["message"]
            except (ValueError, KeyError, IndexError, TypeError):
                response.failure("not a chat.completion")
                return
            response.success()

    def stream(self, model: str) -> None:
        """One streaming call; `TTFE <model>` records the time to the first `data:` event."""
        name = f"stream {model}"
        start = time.perf_counter()
        first: float | None = None
        events = 0
        done = False
        with self.client.post(
            CHAT_PATH,
            data=json.dumps(_body(model, stream=True)),
            name=name,
            stream=True,
            catch_response=True,
            headers={"Accept": "text/event-stream"},
        ) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            for line in response.iter_lines():
                if not line.startswith(b"data:"):
                    continue
                if first is None:
                    first = time.perf_counter()
                events += 1
                if line.strip() == b"data: [DONE]":
                    done = True
            if not done:
                response.failure(f"stream ended without [DONE] after {events} events")
                return
            response.success()
        end = time.perf_counter()
        # Locust times a streamed request to its headers only: record the first event and
        # the whole stream as entries of their own.
        if first is not None:
            self._record("TTFE", f"TTFE {model}", first - start, events)
        self._record("STREAM", f"stream total {model}", end - start, events)

    def _record(self, kind: str, name: str, seconds: float, events: int) -> None:
        self.environment.events.request.fire(
            request_type=kind,
            name=name,
            response_time=seconds * 1000,
            response_length=events,
            exception=None,
            context={},
        )


class ChatUser(_OpenAIUser):
    """Non-streaming chat completions on the first model."""

    @task
    def completion(self) -> None:
        self.chat(MODELS[0])


class StreamingUser(_OpenAIUser):
    """Streaming chat completions (SSE) on the first model."""

    @task
    def streaming(self) -> None:
        self.stream(MODELS[0])


class MixedUser(_OpenAIUser):
    """A mix like a real fleet: 3 non-streaming : 1 streaming, random model each time."""

    @task(3)
    def completion(self) -> None:
        self.chat(random.choice(MODELS))

    @task(1)
    def streaming(self) -> None:
        self.stream(random.choice(MODELS))
