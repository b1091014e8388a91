#!/usr/bin/env bash
# Installs what `make test` needs beyond Go: Debian's Chromium for the
# browser test, and the real servers the Redis and multi-node tests start
# on their own loopback ports (redis-server, redis-sentinel, redis-cli,
# nginx). Idempotent: does nothing when everything is already there.
set -euo pipefail

# nginx lives in /usr/sbin, which a non-root PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
want_nginx=0
command -v nginx >/dev/null 2>&1 || want_nginx=1

if [ ${#need[@]} -eq 0 ] && [ "$want_nginx" -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	missing=("${need[@]}")
	[ "$want_nginx" -eq 1 ] && missing+=(nginx-light)
	echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root" >&2
	exit 1
fi

# The tests start their own servers on free ports; the packages' postinst
# must not leave system services behind. invoke-rc.d asks policy-rc.d, and
# 101 means "action forbidden". A policy the machine already has is kept.
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	trap 'rm -f "$policy"' EXIT
	printf '#!/bin/sh\nexit 101\n' >"$policy"
	chmod 0755 "$policy"
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq

# nginx-light is the small build; where a release no longer offers it, the
# plain nginx package does the same job for the tests.
candidate() {
	apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ { print $2 }'
}
if [ "$want_nginx" -eq 1 ]; then
	c=$(candidate nginx-light)
	if [ -n "$c" ] && [ "$c" != "(none)" ]; then
		need+=(nginx-light)
	else
		need+=(nginx)
	fi
fi

echo "installing ${need[*]}"
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
