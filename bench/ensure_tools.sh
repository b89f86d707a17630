#!/usr/bin/env bash
# Make wrk, nginx and redis-server available for the benchmarks (Debian packages). Installs them when run
# as root with apt-get; otherwise says exactly what is missing. Exit 1 if anything is missing.
missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
# Shared limits (tests/e2e/test_shared_limits.py, bench --shared): a real Redis, never a mock.
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "bench: installing ${missing[*]} with apt-get" >&2
  export DEBIAN_FRONTEND=noninteractive
  if apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null; then
    exit 0
  fi
fi
echo "bench: missing Debian packages: ${missing[*]} (apt-get install ${missing[*]})" >&2
exit 1
