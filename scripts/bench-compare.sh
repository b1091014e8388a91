#!/usr/bin/env bash
# Runs herald bench scenarios against herald and against the plain net/http
# broadcaster (bench/baseline), one after the other on this machine, each
# hub in its own process, and writes one JSON result per run into OUT.
#
#   scripts/bench-compare.sh OUT-DIR [scenario...]
#
# Scenarios: idle10k idle18k fanout fanout-nodelay fanout-delay fanout-max publish publish-attached
# publish-fanout resume resume-restart resume-cold churn slow flood idle-patterns.
# Everything runs on loopback; every run is bounded by --duration.
set -euo pipefail

out=${1:?usage: bench-compare.sh OUT-DIR [scenario...]}
shift
mkdir -p "$out"
scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(idle10k idle18k fanout fanout-max publish resume churn slow)

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
herald="$work/herald"
go build -o "$herald" ./cmd/herald
key=bench-compare-secret-bench-compare-secret
port=4100

start_hub() { # kind extra-args...
	local kind=$1
	shift
	port=$((port + 1))
	hub="http://127.0.0.1:$port/.well-known/mercure"
	if [ "$kind" = herald ]; then
		rm -rf "$work/data"
		"$herald" serve --addr "127.0.0.1:$port" --data-dir "$work/data" --jwt-key "$key" \
			--anonymous --log-level warn "$@" >"$work/hub.log" 2>&1 &
	else
		"$herald" bench serve-baseline --addr "127.0.0.1:$port" >"$work/hub.log" 2>&1 &
	fi
	pid=$!
	for _ in $(seq 100); do
		curl -s -o /dev/null "http://127.0.0.1:$port/healthz" && return 0
		curl -s -o /dev/null -X POST "http://127.0.0.1:$port/.well-known/mercure" && return 0
		sleep 0.1
	done
	echo "hub did not start" >&2
	cat "$work/hub.log" >&2
	return 1
}

stop_hub() {
	kill -INT "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	# A hub restarted by --restart-cmd is not this shell's child.
	for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
	kill -KILL "$pid" 2>/dev/null || true
}

bench() { # name kind scenario args...
	local name=$1 kind=$2 scen=$3
	shift 3
	echo "== $name ($kind)" >&2
	echo "$pid" >"$work/hub.pid"
	"$herald" bench "$scen" --hub "$hub" --key "$key" --server-pid "$pid" --json "$@" \
		>"$out/$name-$kind.json" 2>"$out/$name-$kind.log" || echo "   (bench exited $?)" >&2
}

pair() { # name scenario herald-serve-args -- bench-args
	local name=$1 scen=$2
	shift 2
	local serve=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do serve+=("$1"); shift; done
	shift
	for kind in herald baseline; do
		start_hub "$kind" "${serve[@]}"
		bench "$name" "$kind" "$scen" "$@"
		stop_hub
	done
}

for s in "${scenarios[@]}"; do
	case $s in
	idle10k) pair idle10k idle -- --subscribers 10000 --duration 20s ;;
	idle18k) pair idle18k idle -- --subscribers 18000 --duration 20s ;;
	fanout) pair fanout fanout -- --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration 20s ;;
	fanout-nodelay) # herald writing every update at once (no pacing); the baseline has no such setting
		pair fanout-nodelay fanout --write-delay 0 -- --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration 20s ;;
	fanout-delay) # herald with a fixed --write-delay 50ms
		pair fanout-delay50 fanout --write-delay 50ms -- --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration 20s ;;
	fanout-max) pair fanout-max fanout -- --subscribers 5000 --topics 1 --payload 100 --find-max --p99-bound 1s --duration 5s ;;
	publish) pair publish publish -- --publishers 64 --duration 15s ;;
	publish-attached) # 8 publishers alone, then with 5,000 subscribers connected to another topic
		pair publish8 publish -- --publishers 8 --duration 15s
		pair publish8-attached5000 publish -- --publishers 8 --attached 5000 --duration 15s ;;
	publish-fanout) # 8 publishers at 50 updates/s to 5,000 subscribers of the topic, then to 1
		pair publish-fanout5000 fanout -- --subscribers 5000 --publishers 8 --rate 50 --payload 100 --duration 15s
		pair publish-fanout1 fanout -- --subscribers 1 --publishers 8 --rate 50 --payload 100 --duration 15s ;;
	resume) # herald only: the baseline keeps no history
		start_hub herald --history-size 1000000 --history-max-age 0
		bench resume herald resume --history 1000000 --publishers 64 --duration 120s
		stop_hub
		start_hub herald --history-size 1000000 --history-max-age 0
		bench resume-200k herald resume --history 200000 --publishers 64 --duration 60s
		stop_hub ;;
	resume-restart | resume-cold) # herald only: a crash between publishing and resuming;
		# resume-cold also empties the page cache, as a machine reboot does.
		drop=:
		[ "$s" = resume-cold ] && drop='echo 3 >/proc/sys/vm/drop_caches || echo "page cache not dropped" >&2'
		start_hub herald --history-size 1000000 --history-max-age 0
		cat >"$work/restart.sh" <<-EOF
			set -e
			old=\$(cat "$work/hub.pid")
			kill -KILL "\$old"
			while kill -0 "\$old" 2>/dev/null; do sleep 0.01; done
			sync
			$drop
			"$herald" serve --addr 127.0.0.1:$port --data-dir "$work/data" --jwt-key "$key" \\
				--anonymous --log-level warn --history-size 1000000 --history-max-age 0 >>"$work/hub.log" 2>&1 &
			echo \$! >"$work/hub.pid"
		EOF
		bench "$s" herald resume --history 1000000 --publishers 64 --duration 120s \
			--restart-cmd "sh $work/restart.sh"
		pid=$(cat "$work/hub.pid")
		stop_hub ;;
	flood) # herald only: the same fanout calm and beside 100 connections of 64 distinct URL patterns each
		start_hub herald
		bench flood herald flood --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration 15s --flood-conns 100 --flood-patterns 64
		stop_hub
		# the same crowd within the per-subscription budget: 32 patterns each, until the
		# anonymous subject's budget (512) refuses the rest
		start_hub herald
		bench flood32 herald flood --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration 15s --flood-conns 100 --flood-patterns 32
		stop_hub ;;
	idle-patterns) # herald only: 10,000 idle subscribers with one exact topic, then each also with the same 63 URL
		# patterns, 64 matchers in all, the most one subscription may have (the default allows 32
		# patterns per subscription, so this hub allows 64)
		start_hub herald
		bench idle10k-exact herald idle --subscribers 10000 --duration 20s
		stop_hub
		start_hub herald --max-patterns-per-subscription 64
		bench idle10k-patterns63 herald idle --subscribers 10000 --duration 20s --patterns 63
		stop_hub ;;
	churn) pair churn churn -- --subscribers 10000 --churn-rate 1000 --duration 10s --settle 60s ;;
	slow) pair slow slow -- --subscribers 5000 --slow-fraction 0.1 --rate 50 --payload 100 --duration 15s ;;
	*) echo "unknown scenario $s" >&2 ;;
	esac
done
echo "results in $out" >&2
