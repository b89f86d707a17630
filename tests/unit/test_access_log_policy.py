"""frontendPolicies.accessLog: load errors, the filter, added and removed fields
(agentgateway's telemetry/log.rs semantics), on records as the proxy builds them."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.errors import ConfigError
from agw_fast.plan import compile_config
from agw_fast.policies.access_log import CompiledAccessLog, capture_step, compile_access_log
from agw_fast.policies.request import PolicyRequest
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry
from agw_fast.telemetry.recorder import Recorder
from tests.unit.test_recorder import OUTCOME, record

pytest.importorskip("cel_expr_python")


def config_with(access_log: object) -> str:
    return json.dumps(
        {
            "frontendPolicies": {"accessLog": access_log},
            "binds": [{"port": 3000, "listeners": [{"routes": [{"backends": [{"host": "h:1"}]}]}]}],
        }
    )


def compiled(access_log: dict[str, object]) -> CompiledAccessLog:
    config = load_config(config_with(access_log), {}, base_dir=Path("/"))
    policy = compile_access_log(config.frontend.access_log)
    assert policy is not None
    return policy


def load_error(access_log: object) -> str:
    config = load_config(config_with(access_log), {}, base_dir=Path("/"))
    with pytest.raises(ConfigError) as info:
        compile_config(config)
    return str(info.value)


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    new = asyncio.new_event_loop()
    yield new
    new.close()


def recorder_for(
    loop: asyncio.AbstractEventLoop, access_log: dict[str, object], fmt: str = "text"
) -> Recorder:
    return Recorder(MetricsRegistry(), AccessLog(loop, fmt, fd=-1), compiled(access_log))


def logged(recorder: Recorder) -> list[str]:
    assert recorder.access_log is not None
    return list(recorder.access_log.lines)


def policy_request(headers: list[tuple[bytes, bytes]]) -> PolicyRequest:
    return PolicyRequest(
        b"GET", b"api.example.com", b"/v1/models", b"?a=1", headers, None, "127.0.0.1:50000"
    )


# -- load ------------------------------------------------------------------------------------


def test_bad_filter_names_the_field() -> None:
    message = load_error({"filter": "request.method =="})
    assert message.startswith("frontendPolicies.accessLog.filter: invalid CEL expression")


def test_bad_add_names_the_field() -> None:
    message = load_error({"add": {"team": "nosuch.thing"}})
    assert message.startswith("frontendPolicies.accessLog.add.team: invalid CEL expression")
    assert "nosuch" in message


def test_unsupported_response_and_llm_fields_refused() -> None:
    message = load_error({"add": {"ct": 'response.headers["content-type"]'}})
    assert message.startswith("frontendPolicies.accessLog.add.ct: not supported")
    assert "response.headers" in message and "response.code" in message
    message = load_error({"filter": "llm.cost > 1.0"})
    assert message.startswith("frontendPolicies.accessLog.filter: not supported")
    assert "llm.cost" in message
    # A string literal that looks like a field is not a use of it.
    assert compiled({"add": {"x": '"response.headers"'}}) is not None


def test_unknown_variable_refused() -> None:
    message = load_error({"filter": 'mcp.method == "x"'})
    assert "frontendPolicies.accessLog.filter" in message
    assert "not supported by agw-fast" in message


def test_wrong_types_name_the_field() -> None:
    with pytest.raises(ConfigError, match=r"^frontendPolicies\.accessLog\.add\.n: "):
        load_config(config_with({"add": {"n": 1}}), {}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match=r"^frontendPolicies\.accessLog\.remove\[0\]: "):
        load_config(config_with({"remove": [1]}), {}, base_dir=Path("/"))
    with pytest.raises(ConfigError, match=r'unknown field "other"'):
        load_config(config_with({"other": 1}), {}, base_dir=Path("/"))


def test_nothing_configured_is_the_default_line() -> None:
    config = load_config(config_with({}), {}, base_dir=Path("/"))
    assert compile_access_log(config.frontend.access_log) is None


def test_capture_step_only_when_request_data_is_used() -> None:
    def gateway_steps(access_log: object) -> tuple[object, ...]:
        config = load_config(config_with(access_log), {}, base_dir=Path("/"))
        (bind,) = compile_config(config)
        assert bind.single is not None
        return bind.single.request_steps

    assert gateway_steps({"filter": "response.code >= 400", "remove": ["src.addr"]}) == ()
    assert gateway_steps({"add": {"team": 'request.headers["x-team"]'}}) == (capture_step,)
    assert gateway_steps({"filter": 'jwt.sub == "a"'}) == (capture_step,)


# -- the line --------------------------------------------------------------------------------


def test_filter_true_logs_false_drops(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(loop, {"filter": "response.code >= 400"})
    recorder.record(record(status=200))
    assert logged(recorder) == []
    recorder.record(record(status=503))
    (line,) = logged(recorder)
    assert "http.status=503" in line
    # Metrics count every request, logged or not.
    assert len(recorder.registry.snapshot().requests) == 2


def test_filter_error_is_false(loop: asyncio.AbstractEventLoop) -> None:
    # A missing header is an evaluation error: agentgateway's eval_bool makes it false.
    recorder = recorder_for(loop, {"filter": 'request.headers["x-debug"] == "1"'})
    recorder.record(record(request=policy_request([])))
    recorder.record(record(request=None))  # rejected before any step ran
    recorder.record(record(request=policy_request([(b"x-debug", b"1")])))
    assert len(logged(recorder)) == 1


def test_added_fields_text(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(loop, {"add": {
        "team": 'request.headers["x-team"]',
        "code": "response.code",
        "slow": "response.code > 100",
        "meta": '{"a": 1, "b": "x y"}',
        "list": "[1, 2]",
        "missing": 'request.headers["nope"]',
        "nothing": "null",
        "peer": "source.address",
        "query": "request.pathAndQuery",
    }})  # fmt: skip
    recorder.record(record(request=policy_request([(b"x-team", b"blue team")])))
    (line,) = logged(recorder)
    head, tail = line.split(" duration=12ms ", 1)
    assert head.endswith("http.status=200 protocol=http")
    assert tail == (
        'team="blue team" code=200 slow=true meta="{\\"a\\":1,\\"b\\":\\"x y\\"}" '
        'list=[1,2] peer=127.0.0.1 query="/v1/models?a=1"'
    )


def test_added_fields_json_and_replacing_a_builtin(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(
        loop,
        {"add": {"http.path": "request.path + \"!\"", "n": "7", "m": '{"k": [true, 1.5]}'}},
        "json",
    )
    recorder.record(record(request=policy_request([])))
    (line,) = logged(recorder)
    fields = json.loads(line)
    assert fields["http.path"] == "/v1/models!"
    assert fields["n"] == 7 and fields["m"] == {"k": [True, 1.5]}
    # A replaced built-in field moves to the end, after `duration`, as agentgateway does.
    assert list(fields)[-4:] == ["duration", "http.path", "n", "m"]


def test_remove(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(loop, {"remove": ["src.addr", "http.host", "no.such.field"]})
    recorder.record(record())
    (line,) = logged(recorder)
    assert "src.addr=" not in line and "http.host=" not in line
    assert line == (
        "info request gateway=default/default listener=listener0 route=default/route0 "
        "endpoint=127.0.0.1:8080 http.method=GET http.path=/v1/models http.version=HTTP/1.1 "
        "http.status=200 protocol=http duration=12ms"
    )


def test_llm_variable(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(loop, {
        "filter": "llm.outputTokens > 1",
        "add": {"model": "llm.responseModel", "total": "llm.inputTokens + llm.outputTokens"},
    })  # fmt: skip
    recorder.record(record(llm=None))  # not an LLM call: `llm` has no fields, filter false
    recorder.record(record(protocol="llm", llm=OUTCOME))
    (line,) = logged(recorder)
    assert line.endswith(" model=gpt-4o-2024 total=15")


def test_jwt_claims_reach_the_line(loop: asyncio.AbstractEventLoop) -> None:
    recorder = recorder_for(loop, {"add": {"user": "jwt.sub"}})
    request = policy_request([])
    request.set_claims("jwt", {"sub": "alice"})
    recorder.record(record(request=request))
    recorder.record(record(request=policy_request([])))  # no token: the field is left out
    first, second = logged(recorder)
    assert first.endswith(" user=alice") and "user=" not in second


def test_a_filter_alone_keeps_the_default_line(loop: asyncio.AbstractEventLoop) -> None:
    for fmt in ("text", "json"):
        plain = Recorder(MetricsRegistry(), AccessLog(loop, fmt, fd=-1))
        filtered = recorder_for(loop, {"filter": "response.code == 200"}, fmt)
        plain.record(record(llm=OUTCOME, protocol="llm"))
        filtered.record(record(llm=OUTCOME, protocol="llm"))
        assert logged(filtered) == logged(plain)


def test_remove_alone_needs_no_cel(loop: asyncio.AbstractEventLoop) -> None:
    policy = compiled({"remove": ["duration"]})
    assert policy.filter is None and policy.uses == frozenset() and not policy.needs_request
    recorder = Recorder(MetricsRegistry(), AccessLog(loop, "json", fd=-1), policy)
    recorder.record(record())
    (line,) = logged(recorder)
    assert "duration" not in json.loads(line)


def test_map_keys_sorted_and_bytes_as_base64(loop: asyncio.AbstractEventLoop) -> None:
    for fmt in ("text", "json"):
        recorder = recorder_for(
            loop, {"add": {"m": '{"z": 1, "a": {"y": b"hi", "b": 2}}', "raw": 'b"hi"'}}, fmt
        )
        for _ in range(5):
            recorder.record(record())
        found = logged(recorder)
        assert len(set(found)) == 1  # the same value logs the same way every time
        if fmt == "json":
            fields = json.loads(found[0])
            assert list(fields["m"]) == ["a", "z"] and fields["m"]["a"] == {"b": 2, "y": "aGk="}
            assert fields["raw"] == "aGk="
        else:
            assert found[0].endswith(
                ' m="{\\"a\\":{\\"b\\":2,\\"y\\":\\"aGk=\\"},\\"z\\":1}" raw="aGk="'
            )
