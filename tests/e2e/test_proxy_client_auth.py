"""`apiKey` and `basicAuth` on routes, over real sockets: each mode with a missing, wrong and
right credential, every place a key can be read from, each htpasswd hash scheme, malformed
`Authorization` headers; a consumed credential never reaches the upstream, and no
credential reaches the log or `/config_dump`."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    Upstream,
    gateway_client,
    unused_port,
    wait_until,
)

KEY = "sk-plain-key-7c41e9"
HASHED_KEY = "hashed-key-2"  # configured only as its SHA-256
HASHED_KEY_SHA256 = "041B6283F21EF6B2FE300A1F5F211B811BAEBC49C109C9F35938CE85BF0D7D23"

# Test vectors from Apache's htpasswd (the password of each is "password"), plus DES crypt.
HTPASSWD = """\
bcrypt_user:$2y$05$nC6nErr9XZJuMJ57WyCob.EuZEjylDt2KaHfbfOtyb.EgL1I2jCVa
apr1_user:$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00
sha_user:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=
crypt_user:bGVh02xkuGli2
colon_user:{SHA}xO2etOilyqtV8o1RvvnmkeBx7QI=
"""
# colon_user's password is "sha-pass"; a password may itself hold colons ("a:b" below is
# tested against a user whose hash is of "sha-pass", so it must fail).

API_KEY_FAILURE_MISSING = b"api key authentication failure: no API Key found"
API_KEY_FAILURE_INVALID = b"api key authentication failure: invalid credentials"
BASIC_MISSING = b"basic authentication failure: no basic authentication credentials found"
BASIC_INVALID = b"basic authentication failure: invalid credentials"


def _route(name: str, prefix: str, policy: str, port: int) -> str:
    return f"""    - name: {name}
      matches: [{{path: {{pathPrefix: {prefix}}}}}]
      policies:
{policy}      backends: [{{host: "127.0.0.1:{port}"}}]
"""


def _api_key(mode: str | None, location: str = "") -> str:
    mode_line = f"          mode: {mode}\n" if mode else ""
    return f"""        apiKey:
          keys:
          - key: {KEY}
            metadata: {{group: eng}}
          - keyHash: "sha256:{HASHED_KEY_SHA256}"
{mode_line}{location}"""


def client_auth_config(port: int, htpasswd_file: Path, extra: str = "") -> str:
    # The config text is env-expanded (as agentgateway does): `$$` is a literal `$`.
    escaped = HTPASSWD.replace("$", "$$")
    inline = "".join(f"            {line}\n" for line in escaped.splitlines())
    routes = [
        _route("strict", "/strict", _api_key("strict"), port),
        _route("optional", "/optional", _api_key(None), port),
        _route("permissive", "/permissive", _api_key("permissive"), port),
        _route("query", "/query", _api_key(
            "strict", "          location: {queryParameter: {name: api_key}}\n"), port),
        _route("cookie", "/cookie", _api_key(
            "strict", "          location: {cookie: {name: session}}\n"), port),
        _route("xkey", "/xkey", _api_key(
            "strict", "          location: {header: {name: X-Api-Key}}\n"), port),
        _route("basic", "/basic", f"""        basicAuth:
          realm: agw test
          mode: strict
          htpasswd: |
{inline}""", port),
        _route("basic-file", "/basic-file", f"""        basicAuth:
          htpasswd: {{file: "{htpasswd_file}"}}
""", port),
        _route("proxy-basic", "/proxy-basic", f"""        basicAuth:
          mode: strict
          htpasswd: {{file: "{htpasswd_file}"}}
          authorizationLocation: {{header: {{name: Proxy-Authorization, prefix: "Basic "}}}}
""", port),
    ]
    config = QUIET.replace('  adminAddr: "off"\n', extra) if extra else QUIET
    return config + "binds:\n- port: 0\n  listeners:\n  - routes:\n" + "".join(routes)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture(scope="module")
def htpasswd_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth") / "users.htpasswd"
    path.write_text(HTPASSWD)
    return path


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as up:
        yield up


@pytest.fixture(scope="module")
def client(
    module_gateway: GatewayFactory, upstream: Upstream, htpasswd_file: Path
) -> Iterator[httpx.Client]:
    gw = module_gateway(client_auth_config(upstream.port, htpasswd_file))
    with gateway_client(gw.port) as c:
        yield c


def forwarded(response: httpx.Response) -> dict[str, object]:
    assert response.status_code == 200, response.text
    doc: dict[str, object] = response.json()
    return doc


def forwarded_header(response: httpx.Response, name: str) -> list[str]:
    headers = forwarded(response)["headers"]
    assert isinstance(headers, list)
    return [value for key, value in headers if key.lower() == name]


def assert_api_key_failure(response: httpx.Response, body: bytes) -> None:
    assert response.status_code == 401
    assert response.content == body
    assert response.headers["content-type"] == "text/plain"
    assert "www-authenticate" not in response.headers


# -- apiKey ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [KEY, HASHED_KEY])
def test_strict_accepts_a_right_key_and_strips_it(client: httpx.Client, key: str) -> None:
    response = client.get("/strict/x", headers={"Authorization": f"Bearer {key}", "X-Keep": "1"})
    assert forwarded_header(response, "authorization") == []
    assert forwarded_header(response, "x-keep") == ["1"]


def test_the_bearer_prefix_is_case_insensitive(client: httpx.Client) -> None:
    response = client.get("/strict/x", headers={"Authorization": f"bEARER {KEY}"})
    assert forwarded_header(response, "authorization") == []


def test_strict_refuses_a_missing_key(client: httpx.Client) -> None:
    assert_api_key_failure(client.get("/strict/x"), API_KEY_FAILURE_MISSING)


@pytest.mark.parametrize(
    "authorization",
    ["Basic abc", f"Token {KEY}", "Bearer"],  # another scheme, or too short: no key at all
)
def test_a_header_without_the_prefix_is_a_missing_key(
    client: httpx.Client, authorization: str
) -> None:
    response = client.get("/strict/x", headers={"Authorization": authorization})
    assert_api_key_failure(response, API_KEY_FAILURE_MISSING)


@pytest.mark.parametrize("key", ["wrong", KEY + "x", KEY[:-1], HASHED_KEY_SHA256])
def test_strict_refuses_a_wrong_key(client: httpx.Client, key: str) -> None:
    response = client.get("/strict/x", headers={"Authorization": f"Bearer {key}"})
    assert_api_key_failure(response, API_KEY_FAILURE_INVALID)


def test_optional_lets_a_request_without_a_key_through(client: httpx.Client) -> None:
    assert forwarded(client.get("/optional/x"))


def test_optional_refuses_a_wrong_key_and_strips_a_right_one(client: httpx.Client) -> None:
    wrong = client.get("/optional/x", headers={"Authorization": "Bearer nope"})
    assert_api_key_failure(wrong, API_KEY_FAILURE_INVALID)
    right = client.get("/optional/x", headers={"Authorization": f"Bearer {KEY}"})
    assert forwarded_header(right, "authorization") == []


def test_permissive_passes_a_wrong_key_on_untouched(client: httpx.Client) -> None:
    assert forwarded(client.get("/permissive/x"))
    wrong = client.get("/permissive/x", headers={"Authorization": "Bearer nope"})
    assert forwarded_header(wrong, "authorization") == ["Bearer nope"]
    right = client.get("/permissive/x", headers={"Authorization": f"Bearer {KEY}"})
    assert forwarded_header(right, "authorization") == []


def test_key_from_a_query_parameter_is_taken_out(client: httpx.Client) -> None:
    response = client.get("/query/x", params=[("keep", "a b"), ("api_key", KEY), ("z", "1")])
    assert forwarded(response)["target"] == "/query/x?keep=a+b&z=1"
    only = client.get("/query/x", params={"api_key": HASHED_KEY})
    assert forwarded(only)["target"] == "/query/x"
    missing = client.get("/query/x", headers={"Authorization": f"Bearer {KEY}"})
    assert_api_key_failure(missing, API_KEY_FAILURE_MISSING)
    wrong = client.get("/query/x", params={"api_key": "nope"})
    assert_api_key_failure(wrong, API_KEY_FAILURE_INVALID)


def test_key_from_a_cookie_is_taken_out(client: httpx.Client) -> None:
    response = client.get("/cookie/x", headers={"Cookie": f"a=1; session={KEY}; b=2"})
    assert forwarded_header(response, "cookie") == ["a=1; b=2"]
    alone = client.get("/cookie/x", headers={"Cookie": f"session={KEY}"})
    assert forwarded_header(alone, "cookie") == []
    wrong = client.get("/cookie/x", headers={"Cookie": "session=nope"})
    assert_api_key_failure(wrong, API_KEY_FAILURE_INVALID)
    other = client.get("/cookie/x", headers={"Cookie": "other=1"})
    assert_api_key_failure(other, API_KEY_FAILURE_MISSING)


def test_key_from_a_header_without_prefix(client: httpx.Client) -> None:
    response = client.get("/xkey/x", headers={"X-Api-Key": KEY, "Authorization": "Bearer b"})
    assert forwarded_header(response, "x-api-key") == []
    assert forwarded_header(response, "authorization") == ["Bearer b"]
    wrong = client.get("/xkey/x", headers={"X-Api-Key": f"Bearer {KEY}"})
    assert_api_key_failure(wrong, API_KEY_FAILURE_INVALID)


# -- basicAuth ---------------------------------------------------------------------------------


@pytest.mark.parametrize("user", ["bcrypt_user", "apr1_user", "sha_user", "crypt_user"])
def test_each_hash_scheme_authenticates_and_is_stripped(client: httpx.Client, user: str) -> None:
    response = client.get("/basic/x", headers={"Authorization": basic(user, "password")})
    assert forwarded_header(response, "authorization") == []


def assert_challenge(response: httpx.Response, body: bytes, realm: str = "agw test") -> None:
    assert response.status_code == 401
    assert response.content == body
    assert response.headers["www-authenticate"] == f'Basic realm="{realm}"'
    assert response.headers["content-type"] == "text/plain"


@pytest.mark.parametrize("user", ["bcrypt_user", "apr1_user", "sha_user", "crypt_user"])
def test_each_hash_scheme_refuses_a_wrong_password(client: httpx.Client, user: str) -> None:
    response = client.get("/basic/x", headers={"Authorization": basic(user, "passwort")})
    assert_challenge(response, BASIC_INVALID)


def test_strict_basic_refuses_missing_credentials(client: httpx.Client) -> None:
    assert_challenge(client.get("/basic/x"), BASIC_MISSING)


@pytest.mark.parametrize(
    ("authorization", "body"),
    [
        ("Bearer abc", BASIC_MISSING),  # not the Basic scheme: no credentials there
        ("Basic", BASIC_MISSING),  # shorter than the prefix
        ("Basic !!!not-base64!!!", BASIC_INVALID),
        ("Basic " + base64.b64encode(b"no-colon").decode(), BASIC_INVALID),
        ("Basic " + base64.b64encode(b"sha_user:password").decode().rstrip("="), BASIC_INVALID),
        ("Basic " + base64.b64encode(b"\xffuser:password").decode(), BASIC_INVALID),
        ("Basic  " + base64.b64encode(b"sha_user:password").decode(), BASIC_INVALID),
        (basic("nobody", "password"), BASIC_INVALID),
        (basic("colon_user", "sha:pass"), BASIC_INVALID),
    ],
)
def test_malformed_or_unknown_credentials(
    client: httpx.Client, authorization: str, body: bytes
) -> None:
    response = client.get("/basic/x", headers={"Authorization": authorization})
    assert_challenge(response, body)


def test_the_basic_prefix_is_case_insensitive_and_passwords_keep_colons(
    client: httpx.Client,
) -> None:
    encoded = base64.b64encode(b"sha_user:password").decode()
    assert forwarded(client.get("/basic/x", headers={"Authorization": f"basic {encoded}"}))
    colon = basic("colon_user", "sha-pass")
    assert forwarded(client.get("/basic/x", headers={"Authorization": colon}))


def test_optional_basic_from_a_file(client: httpx.Client) -> None:
    assert forwarded(client.get("/basic-file/x"))
    response = client.get("/basic-file/x", headers={"Authorization": basic("apr1_user", "no")})
    assert_challenge(response, BASIC_INVALID, realm="Restricted")
    ok = client.get("/basic-file/x", headers={"Authorization": basic("apr1_user", "password")})
    assert forwarded_header(ok, "authorization") == []


def test_proxy_authorization_is_challenged_with_407(client: httpx.Client) -> None:
    response = client.get("/proxy-basic/x")
    assert response.status_code == 407
    assert response.headers["proxy-authenticate"] == 'Basic realm="Restricted"'
    assert "www-authenticate" not in response.headers
    ok = client.get(
        "/proxy-basic/x",
        headers={"Proxy-Authorization": basic("sha_user", "password"), "Authorization": "x"},
    )
    assert forwarded_header(ok, "proxy-authorization") == []
    assert forwarded_header(ok, "authorization") == ["x"]


# -- secrets -----------------------------------------------------------------------------------


def test_credentials_never_reach_config_dump_or_the_log(
    gateway: GatewayFactory, upstream: Upstream, htpasswd_file: Path
) -> None:
    admin = unused_port()
    extra = f'  adminAddr: "127.0.0.1:{admin}"\n  logging:\n    level: debug\n'
    gw = gateway(client_auth_config(upstream.port, htpasswd_file, extra))
    with gateway_client(gw.port) as c:
        c.get("/strict/x", headers={"Authorization": f"Bearer {KEY}"})
        c.get("/strict/x", headers={"Authorization": f"Bearer {KEY}-wrong"})
        c.get("/basic/x", headers={"Authorization": basic("sha_user", "password")})
        c.get("/query/x", params={"api_key": KEY})
        c.get("/query/x", params={"api_key": KEY + "-wrong"})
    with gateway_client(admin) as a:

        def dump() -> httpx.Response | None:
            try:
                return a.get("/config_dump")
            except httpx.TransportError:
                return None

        wait_until(dump, what="admin port")
        response = dump()
    assert response is not None and response.status_code == 200
    text = response.text
    json.loads(text)
    assert gw.stop() == 0
    output = text + gw.output()
    for secret in (KEY, HASHED_KEY_SHA256, HASHED_KEY_SHA256.lower(), "W6ph5Mm5Pz8G",
                   "lZL6V/ci", "nC6nErr9XZJ", "bGVh02xkuGli2", "cGFzc3dvcmQ"):
        assert secret not in output, f"{secret} leaked:\n{output[-3000:]}"
    assert '"keys": "<redacted>"' in text and '"htpasswd": "<redacted>"' in text
