"""nginx configurations for the bench: the `return 200` upstream and the reference proxy.

Both run one worker in the foreground (`daemon off`) with every path (pid, temp dirs, error
log) under the bench work directory, so no system nginx state is touched.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from bench.payloads import RESPONSE_BODY

__all__ = ["make_cert", "nginx_argv", "proxy_conf", "upstream_conf"]


def make_cert(work: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for localhost/127.0.0.1 (made once per work dir)."""
    cert, key = work / "tls" / "cert.pem", work / "tls" / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    cert.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def _main_section(work: Path, name: str, connections: int) -> str:
    # As root the worker would switch to `nobody` and lose access to the work dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    tmp = work / f"{name}-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    return f"""{user}worker_processes 1;
daemon off;
pid {work / (name + ".pid")};
error_log {work / (name + ".error.log")} warn;
worker_rlimit_nofile {2 * connections + 1024};
events {{ worker_connections {connections}; }}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
"""


def upstream_conf(
    work: Path, *, port: int, tls_port: int | None, cert: tuple[Path, Path] | None
) -> Path:
    """The origin: `return 200` with the 345 B chat completion, plain and optionally TLS."""
    body = RESPONSE_BODY.decode()
    assert "'" not in body and "$" not in body, "body must be a plain nginx string"
    location = f"""        location / {{
            default_type application/json;
            return 200 '{body}';
        }}
"""
    text = _main_section(work, "upstream", 16384)
    text += f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
{location}    }}
"""
    if tls_port is not None and cert is not None:
        text += f"""    server {{
        listen 127.0.0.1:{tls_port} ssl backlog=4096;
        ssl_certificate {cert[0]};
        ssl_certificate_key {cert[1]};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache shared:bench:1m;
{location}    }}
"""
    text += "}\n"
    path = work / "upstream.nginx.conf"
    path.write_text(text)
    return path


def proxy_conf(
    work: Path,
    name: str,
    *,
    port: int,
    upstream_port: int,
    tls: bool = False,
    connections: int = 16384,
    listen_cert: tuple[Path, Path] | None = None,
) -> Path:
    """nginx as the reference reverse proxy (1 worker, kept-alive upstream, no buffering);
    with `listen_cert` (cert, key) it terminates client TLS (1.2 and 1.3, as agw-fast)."""
    listen = f"listen 127.0.0.1:{port} backlog=4096;"
    if listen_cert is not None:
        listen = (
            f"listen 127.0.0.1:{port} ssl backlog=4096;\n"
            f"        ssl_certificate {listen_cert[0]};\n"
            f"        ssl_certificate_key {listen_cert[1]};\n"
            "        ssl_protocols TLSv1.2 TLSv1.3;"
        )
    scheme = "https" if tls else "http"
    ssl = "        proxy_ssl_session_reuse on;\n        proxy_ssl_verify off;\n" if tls else ""
    text = _main_section(work, name, connections)
    text += f"""    upstream origin {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 600s;
    }}
    server {{
        {listen}
        location / {{
            proxy_pass {scheme}://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $proxy_host;
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 60s;
{ssl}        }}
    }}
}}
"""
    path = work / f"{name}.nginx.conf"
    path.write_text(text)
    return path


def nginx_argv(nginx: str, work: Path, conf: Path, name: str) -> list[str]:
    """`nginx -p WORK -c CONF -e LOG`: `-e` keeps startup errors out of /var/log/nginx."""
    return [nginx, "-p", str(work), "-c", str(conf), "-e", str(work / f"{name}.error.log")]
