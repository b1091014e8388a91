#!/usr/bin/env bash
# Measures herald configurations beside each other, in one run so that
# every ratio compares figures taken minutes apart on the same machine: on
# Redis (engine/redis) beside its embedded engines, and with its limits and
# tracing on beside off. (scripts/bench-compare.sh compares herald with
# other hubs.) It starts its own redis-server (AOF on, as in production) on
# a free loopback port in a temporary directory, the herald nodes, and for
# tracing a collector that counts spans (internal/otlpsink), and writes
# into OUT-DIR one JSON result per bench run, each node's /metrics and log
# after it, the CPU each process spent, and summary.md with the ratios.
#
#   scripts/bench-configs.sh OUT-DIR [comparison...]
#
# Comparisons (default: all, in this order):
#   publish         64 durable publishers as fast as acknowledged: memory, bolt,
#                   redis one node, redis three nodes (appendfsync everysec)
#   publish-always  the same on redis with appendfsync always (one and three nodes)
#   fanout          2,500 subscribers, 80 updates/s: bolt one node, redis one
#                   node, redis three nodes with subscribers and publishers spread
#                   over them; the feed lag and batch size histograms of every node
#   fanout-paced    the same, bolt one node and redis three nodes, every node with
#                   --write-delay 50ms: the write pacing a lone node sets itself at
#                   this load, which three nodes sharing two cores do not (each
#                   paces by its own third of the load as if it had the cores alone)
#   idle            5,000 idle subscribers on one node, bolt and redis: RSS per
#                   connection
#   subscriptions   10,000 subscribers joining and leaving (churn, 500/s), then
#                   2,500 subscribers x 80 updates/s, on one bolt node: without
#                   --subscriptions, with it (every begin and end announced at
#                   once: --subscriptions-grace 0), and with it at the default
#                   grace; then the churn on one redis node, without and with
#                   (grace 0: every subscription recorded in Redis and announced)
#   guard           64 durable publishers, then 2,500 subscribers x 80 updates/s,
#                   on one bolt node: every limit off (--max-connections 0, no
#                   overload check), every limit on but none reached, and the
#                   same with tracing exported over OTLP (every publish sampled)
# Everything runs on loopback; every run is bounded by --duration.
# DURATION (default 15s) and FANOUT_DURATION (default 20s) override the runs'
# lengths. NODE_GOMAXPROCS sets GOMAXPROCS for every herald node (e.g. 1: three
# nodes on two cores each sized to its share, as CPU limits in a container do).
set -euo pipefail

out=${1:?usage: bench-redis.sh OUT-DIR [comparison...]}
shift
mkdir -p "$out"
out=$(cd "$out" && pwd)
comparisons=("$@")
[ ${#comparisons[@]} -gt 0 ] || comparisons=(publish publish-always fanout fanout-paced idle guard subscriptions)
duration=${DURATION:-15s}
fanout_duration=${FANOUT_DURATION:-20s}

command -v redis-server >/dev/null || { echo "redis-server not found" >&2; exit 1; }
work=$(mktemp -d)
started=() # every process this script started
cleanup() {
	for p in "${started[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

herald="$work/herald"
CGO_ENABLED=0 go build -o "$herald" ./cmd/herald
sink="$work/otlpsink"
go build -o "$sink" ./internal/otlpsink
key=bench-redis-secret-bench-redis-secret-0
tck=$(getconf CLK_TCK)
next_port=$((20000 + RANDOM % 20000))

# free_port sets port to a loopback port nothing listens on, never the
# same twice (not in a subshell: it counts in next_port).
free_port() {
	while :; do
		next_port=$((next_port + 1))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; then
			port=$next_port
			return
		fi
	done
}

# cpu_s PID prints the CPU seconds (user + system) the process has used.
cpu_s() {
	local rest
	rest=$(sed 's/^.*) //' "/proc/$1/stat")
	awk -v t="$tck" '{ printf "%.3f", ($12 + $13) / t }' <<<"$rest"
}

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

rport=""
rpid=""
start_redis() { # appendfsync
	stop_redis
	free_port
	rport=$port
	rm -rf "$work/redis"
	mkdir -p "$work/redis"
	redis-server --bind 127.0.0.1 --port "$rport" --dir "$work/redis" --save '' \
		--appendonly yes --appendfsync "$1" --protected-mode yes --daemonize no \
		--logfile "$work/redis/redis.log" &
	rpid=$!
	started+=("$rpid")
	for _ in $(seq 100); do
		[ "$(redis-cli -p "$rport" ping 2>/dev/null)" = PONG ] && return 0
		sleep 0.1
	done
	echo "redis did not start" >&2
	cat "$work/redis/redis.log" >&2
	return 1
}

stop_redis() {
	[ -n "$rpid" ] || return 0
	redis-cli -p "$rport" shutdown nosave >/dev/null 2>&1 || true
	wait "$rpid" 2>/dev/null || true
	rpid=""
}

# redis_cpu_s: the server's CPU seconds, its forks (AOF rewrites) included.
redis_cpu_s() {
	redis-cli -p "$rport" info cpu | tr -d '\r' |
		awk -F: '/^used_cpu_(sys|user)(_children)?:/ { s += $2 } END { printf "%.3f", s }'
}

redis_forks() { redis-cli -p "$rport" info stats | tr -d '\r' | awk -F: '/^total_forks:/ { print $2 }'; }

# start_nodes N ENGINE: N herald nodes on ENGINE (memory, bolt or redis), one
# --public-url for all so that one token serves every node, and serve_args.
# Sets hubs (the comma-separated list), node_pids and node_ports.
start_nodes() {
	local n=$1 engine=$2 k port public=""
	hubs=""
	node_pids=()
	node_ports=()
	for k in $(seq "$n"); do
		free_port
		[ -n "$public" ] || public="http://127.0.0.1:$port/.well-known/mercure"
		local e=$engine
		[ "$engine" = redis ] && e="redis://127.0.0.1:$rport/0"
		rm -rf "$work/data$k"
		env "${node_env[@]}" GOMAXPROCS=${NODE_GOMAXPROCS:-} "$herald" serve --addr "127.0.0.1:$port" --data-dir "$work/data$k" --engine "$e" \
			--jwt-key "$key" --anonymous --log-level warn --public-url "$public" "${serve_args[@]}" \
			>"$work/node$k.log" 2>&1 &
		node_pids+=($!)
		started+=($!)
		node_ports+=("$port")
		hubs+="${hubs:+,}http://127.0.0.1:$port/.well-known/mercure"
	done
	for k in $(seq 0 $((n - 1))); do
		local ok=""
		for _ in $(seq 100); do
			kill -0 "${node_pids[$k]}" 2>/dev/null || break # it, not another, must answer
			if curl -sf -o /dev/null "http://127.0.0.1:${node_ports[$k]}/healthz"; then ok=1; break; fi
			sleep 0.1
		done
		if [ -z "$ok" ]; then
			echo "node $((k + 1)) did not start" >&2
			cat "$work/node$((k + 1)).log" >&2
			return 1
		fi
	done
}

stop_nodes() {
	local p
	for p in "${node_pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done
	for p in "${node_pids[@]}"; do
		for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
	node_pids=()
}

# bench NAME SCENARIO ARGS...: one bench run against the nodes started
# last. Writes NAME.json, NAME.log, NAME-nodeK.metrics and NAME.cost
# (CPU seconds of every herald node and of Redis over the whole run,
# connecting and draining included).
bench() {
	local name=$1 scen=$2 k
	shift 2
	echo "== $name" >&2
	local cpu0=() cpu1=() r0="" r1="" f0="" f1="" pidarg=()
	for p in "${node_pids[@]}"; do cpu0+=("$(cpu_s "$p")"); done
	if [ -n "$rpid" ]; then r0=$(redis_cpu_s); f0=$(redis_forks); fi
	[ ${#node_pids[@]} -eq 1 ] && pidarg=(--server-pid "${node_pids[0]}")
	"$herald" bench "$scen" --hub "$hubs" --key "$key" --json "${pidarg[@]}" "$@" \
		>"$out/$name.json" 2>"$out/$name.log" || echo "   (bench exited $?)" >&2
	for p in "${node_pids[@]}"; do cpu1+=("$(cpu_s "$p")"); done
	if [ -n "$rpid" ]; then r1=$(redis_cpu_s); f1=$(redis_forks); fi
	{
		for k in "${!node_pids[@]}"; do
			echo "node$((k + 1))_cpu_s $(awk -v a="${cpu0[$k]}" -v b="${cpu1[$k]}" 'BEGIN { printf "%.3f", b - a }')"
			echo "node$((k + 1))_rss_kb $(rss_kb "${node_pids[$k]}")"
		done
		[ -z "$r0" ] || echo "redis_cpu_s $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.3f", b - a }')"
		[ -z "$f0" ] || echo "redis_forks $((f1 - f0))"
	} >"$out/$name.cost"
	for k in "${!node_ports[@]}"; do
		curl -sf "http://127.0.0.1:${node_ports[$k]}/metrics" >"$out/$name-node$((k + 1)).metrics" || true
	done
}

serve_args=() # more flags for every node
node_env=()   # more environment for every node (VAR=value)

sink_port=""
start_sink() {
	free_port
	sink_port=$port
	"$sink" "127.0.0.1:$sink_port" >"$work/sink.log" 2>&1 &
	started+=($!)
	for _ in $(seq 100); do
		curl -sf -o /dev/null "http://127.0.0.1:$sink_port/count" && return 0
		sleep 0.1
	done
	echo "otlpsink did not start" >&2
	return 1
}

# run_case NAME NODES ENGINE SCENARIO ARGS...: start, bench, stop.
run_case() {
	local name=$1 n=$2 engine=$3
	shift 3
	[ "$engine" != redis ] || redis-cli -p "$rport" flushall >/dev/null
	start_nodes "$n" "$engine"
	bench "$name" "$@"
	stop_nodes
	for k in $(seq "$n"); do cp "$work/node$k.log" "$out/$name-node$k.log"; done
}

for c in "${comparisons[@]}"; do
	case $c in
	publish)
		start_redis everysec
		pub=(publish --publishers 64 --duration "$duration")
		run_case publish-memory 1 memory "${pub[@]}"
		run_case publish-bolt 1 bolt "${pub[@]}"
		run_case publish-redis1 1 redis "${pub[@]}"
		run_case publish-redis3 3 redis "${pub[@]}"
		stop_redis ;;
	publish-always)
		start_redis always
		pub=(publish --publishers 64 --duration "$duration")
		run_case publish-always-redis1 1 redis "${pub[@]}"
		run_case publish-always-redis3 3 redis "${pub[@]}"
		stop_redis ;;
	fanout)
		start_redis everysec
		fan=(fanout --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration "$fanout_duration")
		run_case fanout-bolt 1 bolt "${fan[@]}"
		run_case fanout-redis1 1 redis "${fan[@]}"
		run_case fanout-redis3 3 redis "${fan[@]}"
		stop_redis ;;
	fanout-paced)
		start_redis everysec
		fan=(fanout --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration "$fanout_duration")
		serve_args=(--write-delay 50ms)
		run_case fanout-paced-bolt 1 bolt "${fan[@]}"
		run_case fanout-paced-redis3 3 redis "${fan[@]}"
		serve_args=()
		stop_redis ;;
	idle)
		start_redis everysec
		run_case idle-bolt 1 bolt idle --subscribers 5000 --duration 10s
		run_case idle-redis1 1 redis idle --subscribers 5000 --duration 10s
		stop_redis ;;
	guard)
		start_sink
		pub=(publish --publishers 64 --duration "$duration")
		fan=(fanout --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration "$fanout_duration")
		off=(--max-connections 0 --overload-lag 0 --overload-cpu-wait 0)
		# Every check runs on every request; none is reached.
		limits=(--max-connections 18000 --max-connections-per-ip 18000 --connect-rate 100000
			--publish-rate 1000000 --max-subscriptions-per-sub 100000 --trusted-proxies 10.0.0.0/8)
		for scen in publish fanout; do
			if [ "$scen" = publish ]; then args=("${pub[@]}"); else args=("${fan[@]}"); fi
			serve_args=("${off[@]}")
			run_case "guard-$scen-off" 1 bolt "${args[@]}"
			serve_args=("${limits[@]}")
			run_case "guard-$scen-limits" 1 bolt "${args[@]}"
			node_env=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$sink_port")
			run_case "guard-$scen-traced" 1 bolt "${args[@]}"
			curl -sf "http://127.0.0.1:$sink_port/count" >"$out/guard-$scen-traced.spans" || true
			node_env=()
		done
		serve_args=() ;;
	subscriptions)
		churn=(churn --churn-rate 500 --duration 20s)
		fan=(fanout --subscribers 2500 --topics 1 --rate 80 --payload 100 --duration "$fanout_duration")
		for scen in churn fanout; do
			if [ "$scen" = churn ]; then args=("${churn[@]}"); else args=("${fan[@]}"); fi
			serve_args=()
			run_case "subs-$scen-off" 1 bolt "${args[@]}"
			serve_args=(--subscriptions --subscriptions-grace 0)
			run_case "subs-$scen-on" 1 bolt "${args[@]}"
			serve_args=(--subscriptions)
			run_case "subs-$scen-grace" 1 bolt "${args[@]}"
		done
		start_redis everysec
		serve_args=()
		run_case subs-churn-redis-off 1 redis "${churn[@]}"
		serve_args=(--subscriptions --subscriptions-grace 0)
		run_case subs-churn-redis-on 1 redis "${churn[@]}"
		stop_redis
		serve_args=() ;;
	*) echo "unknown comparison $c" >&2 ;;
	esac
done

# --- summary -------------------------------------------------------------

# hist_p99 METRIC FILES...: P99 of a Prometheus histogram summed over the
# files, interpolated within its bucket as histogram_quantile does.
hist_p99() {
	local m=$1
	shift
	[ $# -gt 0 ] || { echo "-"; return; }
	# Buckets come in increasing order of le, the same on every node.
	cat "$@" | awk -v m="${m}_bucket" '
		index($0, m "{") == 1 {
			match($0, /le="[^"]*"/)
			le = substr($0, RSTART + 4, RLENGTH - 5)
			if (!(le in c)) order[++n] = le
			c[le] += $NF
		}
		END {
			if (!("+Inf" in c) || c["+Inf"] == 0) { print "-"; exit }
			rank = 0.99 * c["+Inf"]; prev = 0; lo = 0
			for (i = 1; i <= n; i++) {
				le = order[i]
				if (le == "+Inf") { printf ">%.1f", 1000 * lo; exit }
				if (c[le] >= rank) { printf "%.2f", 1000 * (lo + (le - lo) * (rank - prev) / (c[le] - prev)); exit }
				prev = c[le]; lo = le + 0
			}
		}'
}

# hist_mean METRIC FILES...: sum/count of a histogram over the files.
hist_mean() {
	local m=$1
	shift
	[ $# -gt 0 ] || { echo "-"; return; }
	cat "$@" | awk -v s="${m}_sum" -v n="${m}_count" '
		$1 == s { sum += $2 } $1 == n { cnt += $2 }
		END { if (cnt > 0) printf "%.2f", sum / cnt; else print "-" }'
}

# hist_op_mean_ms OP FILES...: mean Redis round trip of OP, in ms.
hist_op_mean_ms() {
	local op=$1
	shift
	[ $# -gt 0 ] || { echo "-"; return; }
	cat "$@" | awk -v s="herald_redis_roundtrip_seconds_sum{op=\"$op\"}" -v n="herald_redis_roundtrip_seconds_count{op=\"$op\"}" '
		$1 == s { sum += $2 } $1 == n { cnt += $2 }
		END { if (cnt > 0) printf "%.3f", 1000 * sum / cnt; else print "-" }'
}

j() { jq -r "$1 // \"-\"" "$out/$2.json" 2>/dev/null || echo "-"; }
cost() { awk -v k="$1" '$1 == k { print $2 }' "$out/$2.cost" 2>/dev/null; }
node_cpu() { awk '/^node[0-9]+_cpu_s/ { s += $2 } END { printf "%.3f", s }' "$out/$1.cost" 2>/dev/null; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a + 0 > 0 && b + 0 > 0) printf "%.2f", a / b; else print "-" }'; }
per1k() { awk -v a="$1" -v n="$2" 'BEGIN { if (n + 0 > 0 && a != "") printf "%.4f", 1000 * a / n; else print "-" }'; }

{
	echo "# herald configurations compared: $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "machine: $(nproc) cores, $(lscpu | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }'), $(redis-server --version | awk '{ print $1, $2, $3 }'), $(go version | awk '{ print $3 }')"
	echo
	if [ -f "$out/publish-bolt.json" ]; then
		bolt=$(j .publishes_per_s publish-bolt)
		echo "## Durable publishes, 64 publishers, $duration"
		echo
		echo "| engine | publishes/s | vs bolt | publish p50 ms | p99 ms | errors | node CPU s | Redis CPU s | node CPU s /1k | Redis CPU s /1k | batch mean | append RTT ms |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
		for n in publish-memory publish-bolt publish-redis1 publish-redis3 publish-always-redis1 publish-always-redis3; do
			[ -f "$out/$n.json" ] || continue
			ps=$(j .publishes_per_s "$n")
			pubd=$(j .published "$n")
			ncpu=$(node_cpu "$n")
			rcpu=$(cost redis_cpu_s "$n")
			ms=("$out/$n"-node*.metrics)
			[ -e "${ms[0]}" ] || ms=()
			printf "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "${n#publish-}" "$ps" "$(ratio "$ps" "$bolt")" \
				"$(j .latency_ms.p50 "$n")" "$(j .latency_ms.p99 "$n")" "$(j .publish_errors "$n")" \
				"$ncpu" "${rcpu:--}" "$(per1k "$ncpu" "$pubd")" "$(per1k "$rcpu" "$pubd")" \
				"$(hist_mean herald_redis_append_batch_size "${ms[@]}")" "$(hist_op_mean_ms append "${ms[@]}")"
		done
		echo
	fi
	if ls "$out"/fanout-*.json >/dev/null 2>&1; then
		echo "## Fanout, 2,500 subscribers, 80 updates/s, $fanout_duration"
		echo
		echo "| setup | deliver p50 ms | p99 ms | p99 vs bolt | max ms | delivered | lost | node CPU s (all) | Redis CPU s | node CPU s /1k deliveries | write delay ms (node 1) | feed lag p99 ms (all nodes) | batch mean | node RSS MB |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
		for n in fanout-bolt fanout-redis1 fanout-redis3 fanout-paced-bolt fanout-paced-redis3; do
			[ -f "$out/$n.json" ] || continue
			case $n in fanout-paced-*) bp99=$(j .latency_ms.p99 fanout-paced-bolt) ;; *) bp99=$(j .latency_ms.p99 fanout-bolt) ;; esac
			ms=("$out/$n"-node*.metrics)
			[ -e "${ms[0]}" ] || ms=()
			rss=$(awk '/_rss_kb/ { printf "%s%.0f", sep, $2 / 1024; sep = "/" }' "$out/$n.cost")
			printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "${n#fanout-}" \
				"$(j .latency_ms.p50 "$n")" "$(j .latency_ms.p99 "$n")" "$(ratio "$(j .latency_ms.p99 "$n")" "$bp99")" \
				"$(j .latency_ms.max "$n")" "$(j .delivered "$n")" "$(j .lost "$n")" \
				"$(node_cpu "$n")" "$(cost redis_cpu_s "$n" || true)" "$(per1k "$(node_cpu "$n")" "$(j .delivered "$n")")" \
				"$(j .extra.server_write_delay_ms "$n")" \
				"$(hist_p99 herald_redis_feed_lag_seconds "${ms[@]}")" "$(hist_mean herald_redis_append_batch_size "${ms[@]}")" "$rss"
		done
		echo
		echo "feed lag p99 ms per node:"
		for f in "$out"/fanout-*redis*-node*.metrics; do
			[ -e "$f" ] || continue
			echo "- $(basename "$f" .metrics): $(hist_p99 herald_redis_feed_lag_seconds "$f")"
		done
		echo
	fi
	if [ -f "$out/guard-publish-off.json" ]; then
		echo "## Limits and tracing, one bolt node"
		echo
		echo "| run | publishes/s or deliveries/s | vs off | p50 ms | p99 ms | p99 vs off | lost | node CPU s /1k | spans exported (cumulative) |"
		echo "|---|---|---|---|---|---|---|---|---|"
		for scen in publish fanout; do
			if [ "$scen" = publish ]; then rate=.publishes_per_s count=.published; else rate=.deliveries_per_s count=.delivered; fi
			base=$(j $rate "guard-$scen-off")
			bp99=$(j .latency_ms.p99 "guard-$scen-off")
			for v in off limits traced; do
				n="guard-$scen-$v"
				[ -f "$out/$n.json" ] || continue
				spans=$(awk '/^spans/ { print $2 }' "$out/$n.spans" 2>/dev/null || true)
				printf "| %s | %.0f | %s | %s | %s | %s | %s | %s | %s |\n" "$scen $v" "$(j $rate "$n")" "$(ratio "$(j $rate "$n")" "$base")" \
					"$(j .latency_ms.p50 "$n")" "$(j .latency_ms.p99 "$n")" "$(ratio "$(j .latency_ms.p99 "$n")" "$bp99")" \
					"$(j .lost "$n")" "$(per1k "$(node_cpu "$n")" "$(j $count "$n")")" "${spans:--}"
			done
		done
		echo
	fi
	if [ -f "$out/subs-churn-off.json" ]; then
		echo "## Active subscriptions, one bolt node"
		echo
		echo "| run | subscribers connected | connect p50 ms | connect p99 ms | deliveries/s | deliver p99 ms | p99 vs off | lost | node CPU s | vs off | subscription events |"
		echo "|---|---|---|---|---|---|---|---|---|---|---|"
		for scen in churn fanout churn-redis; do
			bcpu=$(node_cpu "subs-$scen-off")
			bp99=$(j .latency_ms.p99 "subs-$scen-off")
			for v in off on grace; do
				n="subs-$scen-$v"
				[ -f "$out/$n.json" ] || continue
				evs=$(awk '/^herald_subscription_events_total\{/ { s += $2 } END { print s + 0 }' "$out/$n-node1.metrics" 2>/dev/null)
				printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n" "$scen $v" \
					"$(j .extra.churn.connected "$n")" "$(j .extra.connect_latency.p50 "$n")" "$(j .extra.connect_latency.p99 "$n")" \
					"$(j .deliveries_per_s "$n")" "$(j .latency_ms.p99 "$n")" "$(ratio "$(j .latency_ms.p99 "$n")" "$bp99")" "$(j .lost "$n")" \
					"$(node_cpu "$n")" "$(ratio "$(node_cpu "$n")" "$bcpu")" "${evs:--}"
			done
		done
		echo
	fi
	if [ -f "$out/idle-bolt.json" ] || [ -f "$out/idle-redis1.json" ]; then
		echo "## Idle, 5,000 subscribers"
		echo
		echo "| engine | RSS KB per connection |"
		echo "|---|---|"
		for n in idle-bolt idle-redis1; do
			[ -f "$out/$n.json" ] || continue
			echo "| ${n#idle-} | $(j .server_rss_per_conn_kb "$n") |"
		done
		echo
	fi
} >"$out/summary.md"
cat "$out/summary.md"
echo "results in $out" >&2
