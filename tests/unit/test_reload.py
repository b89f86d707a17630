"""Hot reload plumbing: the file watch's debounce, the update channel, shared buckets."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from agw_fast.config.model import Config, LocalRateLimit, RoutePolicies
from agw_fast.policies.localratelimit import TokenLimits, bucket_files
from agw_fast.server.reload import (
    DEBOUNCE,
    FileWatch,
    ReloadState,
    channel_pair,
    encode_config,
    receive_latest,
    send_update,
)


def test_the_watch_reloads_a_debounce_after_the_first_change(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a")
    watch = FileWatch(str(path))
    assert not watch.poll(0.0)
    path.write_text("bb")
    assert not watch.poll(1.0)  # first seen
    path.write_text("ccc")  # still being written: the same reload
    assert not watch.poll(1.0 + DEBOUNCE / 2)
    assert watch.poll(1.0 + DEBOUNCE)
    assert not watch.poll(5.0)  # nothing new since


def test_the_watch_follows_the_path_across_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("same")
    watch = FileWatch(str(path))
    replacement = tmp_path / "c.tmp"
    replacement.write_text("same")  # same size, new inode
    os.replace(replacement, path)
    assert not watch.poll(0.0)
    assert watch.poll(DEBOUNCE)
    replacement.write_text("again")
    os.replace(replacement, path)
    assert not watch.poll(10.0)
    assert watch.poll(10.0 + DEBOUNCE)


def test_a_change_undone_before_the_debounce_is_no_reload(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("a")
    before = path.stat()
    watch = FileWatch(str(path))
    path.write_text("b")
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert not watch.poll(0.0)
    assert not watch.poll(DEBOUNCE)


def test_reload_state_readiness_and_gauge() -> None:
    state = ReloadState(2)
    assert state.lagging() == [0, 1]
    state.set_serving(0, 1)
    state.set_serving(1, 1)
    assert state.lagging() == []
    state.target = 2
    state.set_serving(1, 2)
    assert state.lagging() == [0]
    assert state.render().endswith(b"agentgateway_config_synchronized 1\n")
    state.synchronized = False
    assert state.render().endswith(b"agentgateway_config_synchronized 0\n")


def _limits(tokens: int) -> RoutePolicies:
    return RoutePolicies(
        local_rate_limit=(
            LocalRateLimit(max_tokens=tokens, tokens_per_fill=1, fill_interval_ns=10**12,
                           kind="tokens", path="p"),
        )
    )  # fmt: skip


def test_an_update_carries_config_buckets_and_sockets() -> None:
    parent, child = channel_pair()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with bucket_files() as created:
        ours = TokenLimits(_limits(5).local_rate_limit, lambda: 0)
    config = Config()
    config_fd = encode_config(config)
    try:
        send_update(parent, 7, config_fd, created, [port], {port: listener})
    finally:
        os.close(config_fd)
    assert receive_latest(child, 7) is None  # not newer than what the child serves
    for generation in (8, 9):
        config_fd = encode_config(config)
        send_update(parent, generation, config_fd, created, [port], {port: listener})
        os.close(config_fd)
    update = receive_latest(child, 7)
    assert update is not None and update.generation == 9  # the latest of a burst
    assert update.config == config and update.ports == [port]
    assert update.sockets[port].getsockname() == listener.getsockname()
    # Compiled against the received descriptors, the buckets are the same memory.
    with bucket_files(update.buckets):
        theirs = TokenLimits(_limits(5).local_rate_limit, lambda: 0)
    update.buckets = []
    theirs.charge(3)
    assert ours.check()[1].startswith(b"x-ratelimit-limit: 5\r\nx-ratelimit-remaining: 2")
    update.close()
    for sock in (listener, parent, child):
        sock.close()


def test_buckets_received_must_match_the_compile() -> None:
    with bucket_files() as created:
        kept = TokenLimits(_limits(1).local_rate_limit, lambda: 0)
    duplicate = os.dup(created[0])
    with pytest.raises(RuntimeError, match="more rate-limit buckets"), bucket_files([duplicate]):
        pass
    with pytest.raises(RuntimeError, match="fewer rate-limit buckets"), bucket_files([]):
        TokenLimits(_limits(1).local_rate_limit, lambda: 0)
    assert kept.check()[0]


def test_a_superseded_update_hands_its_new_sockets_on() -> None:
    """A burst: update 8 adds a port (and carries its socket), update 9 keeps that port but,
    as the supervisor sends a bind's sockets once, carries none for it. The worker applying
    9 only must still get the socket, or it would serve the port without accepting on it."""
    parent, child = channel_pair()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = Config()
    for generation, sockets in ((8, {port: listener}), (9, {})):
        config_fd = encode_config(config)
        send_update(parent, generation, config_fd, [], [port], sockets)
        os.close(config_fd)
    update = receive_latest(child, 7)
    assert update is not None and update.generation == 9
    assert update.sockets[port].getsockname() == listener.getsockname()
    update.close()
    for sock in (listener, parent, child):
        sock.close()
