#!/usr/bin/env bash
# Installs what `make test` needs beyond Go: Debian's Chromium for the
# browser test. Idempotent: does nothing when it is already there.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root" >&2
	exit 1
fi
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
