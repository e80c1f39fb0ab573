#!/usr/bin/env bash
# run.sh runs the whole pipeline on this machine: a private Redis (unless REDIS_URL is
# set), ingest, one processor (or PROCESSORS of them) and queryapi. Ctrl-C, SIGINT or
# SIGTERM stops everything, services first, Redis last, and leaves no process behind.
# A service that dies meanwhile (try kill -9 on a processor) is restarted.
#
#   scripts/run.sh                          # ports 8080 (ingest), 8081 (query), 8082 (processor)
#   PROCESSORS=2 scripts/run.sh             # processors on 8082 and 8083, one consumer group
#   INGEST_ADDR=127.0.0.1:9080 scripts/run.sh
#   REDIS_URL=redis://127.0.0.1:6379/0 scripts/run.sh   # use an existing Redis instead
#   DATA_DIR=/tmp/cs scripts/run.sh         # Redis's data and the logs there, not in .data/
#   DEMO=false scripts/run.sh               # without the demo shop (ingest's /demo/)
#   scripts/run.sh --cluster                # a local Redis Cluster of 3 masters on ports
#                                           # 7000-7002 (CLUSTER_PORT moves them; bus ports
#                                           # +10000) and STREAM_PARTITIONS=6 by default
#
# Processor N is consumer CONSUMER_NAME-N (default local-N), also after a restart, so a
# restarted processor re-reads its own pending entries at once.
#
# Needs bash 4.3+, Go, redis-server (with redis-cli; scripts/deps.sh installs it as root,
# or says how), and curl or wget. Data and logs go to .data/ in the repository
# (git-ignored).
set -euo pipefail
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 403)); then
	echo "run.sh: needs bash 4.3 or newer (this is $BASH_VERSION)" >&2
	exit 1
fi

# A script started with & by another script or a non-interactive shell inherits SIGINT
# ignored, and bash cannot trap a signal that was ignored when it started. Start again,
# same pid, with SIGINT restored, so that kill -INT stops this script wherever it runs.
if [[ $(trap -p INT) == "trap -- '' SIGINT" && -z ${RUN_SH_SIGINT_RESTORED:-} ]]; then
	export RUN_SH_SIGINT_RESTORED=1
	if env --default-signal=INT true 2>/dev/null; then
		exec env --default-signal=INT "$BASH" "${BASH_SOURCE[0]}" "$@"
	elif command -v perl >/dev/null; then
		exec perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec: $!"' "$BASH" "${BASH_SOURCE[0]}" "$@"
	fi
	echo "run.sh: SIGINT is ignored here (started with &); stop it with SIGTERM" >&2
fi
unset RUN_SH_SIGINT_RESTORED

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

cluster=""
for arg; do
	case $arg in
	--cluster) cluster=1 ;;
	*)
		echo "run.sh: unknown argument $arg (usage: scripts/run.sh [--cluster])" >&2
		exit 1
		;;
	esac
done

export INGEST_ADDR=${INGEST_ADDR:-127.0.0.1:8080}
export QUERY_ADDR=${QUERY_ADDR:-127.0.0.1:8081}
export PROCESSOR_ADDR=${PROCESSOR_ADDR:-127.0.0.1:8082}
# The demo shop: ingest serves a few product pages that carry the tracker (t.js), each
# linking to the dashboard, so that clicking around shows the counts move.
export DEMO=${DEMO:-true}
processors=${PROCESSORS:-1}
consumer=${CONSUMER_NAME:-local} # processor N is $consumer-N
data_dir=${DATA_DIR:-$root/.data}

redis_dir=""
log_dir=""
redis_sock="" # set when this script owns the Redis
redis_pid=""
cluster_ports=() # with --cluster: the masters' ports
cluster_pids=()  # and their pids
names=() # services, in start order: ingest, processor-1 … processor-N, queryapi
bins=()  # the binary each runs
addrs=() # the address each listens on
pids=()  # the pid of each, while it runs

log() { printf 'run.sh: %s\n' "$*" >&2 || true; }

# url turns a listen address (":8080", "0.0.0.0:8080", "127.0.0.1:8080") into a base URL.
url() {
	local host=${1%:*} port=${1##*:}
	case $host in "" | 0.0.0.0 | "[::]") host=127.0.0.1 ;; esac
	printf 'http://%s:%s' "$host" "$port"
}

http_ok() {
	if command -v curl >/dev/null; then
		curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null
	else
		wget -q -O /dev/null -T 2 "$1" 2>/dev/null
	fi
}

# alive reports whether any of the pids is still running.
alive() {
	local pid
	for pid; do
		kill -0 "$pid" 2>/dev/null && return 0
	done
	return 1
}

# stop_services sends SIGTERM to every service, gives them 15 s to finish what is in
# flight, then kills any that are left.
stop_services() {
	local pid i
	((${#pids[@]} > 0)) || return 0
	log "stopping ${names[*]}"
	kill -TERM "${pids[@]}" 2>/dev/null || true
	for ((i = 0; i < 150; i++)); do
		alive "${pids[@]}" || break
		sleep 0.1
	done
	for pid in "${pids[@]}"; do
		if kill -0 "$pid" 2>/dev/null; then
			log "pid $pid did not stop in 15s; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
	pids=()
}

stop_cluster() {
	local i n
	((${#cluster_pids[@]} > 0)) || return 0
	log "stopping the redis cluster (pids ${cluster_pids[*]})"
	for i in "${!cluster_ports[@]}"; do
		# SHUTDOWN flushes the AOF before the server exits.
		redis-cli -p "${cluster_ports[i]}" shutdown >/dev/null 2>&1 || kill -TERM "${cluster_pids[i]}" 2>/dev/null || true
	done
	for ((n = 0; n < 100; n++)); do
		alive "${cluster_pids[@]}" || break
		sleep 0.1
	done
	for i in "${!cluster_pids[@]}"; do
		if kill -0 "${cluster_pids[i]}" 2>/dev/null; then
			log "redis on port ${cluster_ports[i]} did not stop in 10s; killing it"
			kill -KILL "${cluster_pids[i]}" 2>/dev/null || true
		fi
	done
	cluster_pids=()
}

stop_redis() {
	stop_cluster
	[[ -n $redis_pid ]] || return 0
	log "stopping redis (pid $redis_pid)"
	# SHUTDOWN flushes the AOF before the server exits.
	redis-cli -s "$redis_sock" shutdown >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null || true
	local i
	for ((i = 0; i < 100; i++)); do
		alive "$redis_pid" || break
		sleep 0.1
	done
	if kill -0 "$redis_pid" 2>/dev/null; then
		log "redis did not stop in 10s; killing it"
		kill -KILL "$redis_pid" 2>/dev/null || true
	fi
	redis_pid=""
}

cleanup() {
	trap - INT TERM EXIT
	[[ ${#pids[@]} -gt 0 || -n $redis_pid || ${#cluster_pids[@]} -gt 0 ]] || return 0 # nothing started yet
	# Services first, so Redis is still there while they finish the work in flight.
	stop_services
	stop_redis
	log "stopped"
}
# Output may go to a pipe (run.sh | tee log) that Ctrl-C closes first: a write to it must
# not kill the script before it has stopped what it started.
trap '' PIPE
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

if ! [[ $processors =~ ^[1-9][0-9]?$ ]]; then
	log "PROCESSORS=$processors: must be a number from 1 to 99"
	exit 1
fi
proc_port=${PROCESSOR_ADDR##*:}
if ! [[ $proc_port =~ ^[0-9]+$ ]] || ((proc_port == 0 || proc_port + processors - 1 > 65535)); then
	log "PROCESSOR_ADDR=$PROCESSOR_ADDR: needs a port from 1 to $((65536 - processors)) (processor N listens on its port + N-1)"
	exit 1
fi

command -v go >/dev/null || { log "go not found on PATH (https://go.dev/doc/install)"; exit 1; }
if [[ -n $cluster && -n ${REDIS_URL:-} ]]; then
	log "--cluster starts a cluster of its own; unset REDIS_URL (or drop --cluster to use yours)"
	exit 1
fi
if [[ -z ${REDIS_URL:-} ]]; then
	scripts/deps.sh redis-server
fi
command -v curl >/dev/null || command -v wget >/dev/null || { log "need curl or wget (apt-get install -y curl)"; exit 1; }
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
redis_dir=$data_dir/redis
log_dir=$data_dir/logs
mkdir -p "$redis_dir" "$log_dir"

[[ -n ${DEMO_DASHBOARD_URL:-} ]] || export DEMO_DASHBOARD_URL="$(url "$QUERY_ADDR")/"

names+=(ingest) bins+=(ingest) addrs+=("$INGEST_ADDR")
for ((n = 1; n <= processors; n++)); do
	names+=("processor-$n") bins+=(processor) addrs+=("${PROCESSOR_ADDR%:*}:$((proc_port + n - 1))")
done
names+=(queryapi) bins+=(queryapi) addrs+=("$QUERY_ADDR")

# A service whose port is taken exits at once, but another program on that port could
# still answer the readiness check below; refuse to start instead.
for addr in "${addrs[@]}"; do
	hostport=$(url "$addr")
	hostport=${hostport#http://}
	if (: <>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
		log "$addr is already in use; set INGEST_ADDR, QUERY_ADDR or PROCESSOR_ADDR to free ports"
		exit 1
	fi
done

# start_redis starts the private redis-server and waits until it answers.
start_redis() {
	# AOF with fsync every second: a restart keeps everything; a crash can lose about the
	# last second of acknowledged writes. --appendfsync always closes that window.
	# noeviction (Redis's default, stated here): the services refuse any other policy.
	# --daemonize puts Redis in its own session, so Ctrl-C in this terminal reaches the
	# services but not Redis, which this script stops last.
	redis-server \
		--port 0 \
		--unixsocket "$redis_sock" --unixsocketperm 700 \
		--dir "$redis_dir" \
		--appendonly yes --appendfsync everysec \
		--maxmemory-policy noeviction \
		--save "" \
		--daemonize yes --pidfile "$redis_dir/redis.pid" \
		--logfile "$redis_dir/redis.log"
	local i
	for ((i = 0; i < 100; i++)); do
		redis-cli -s "$redis_sock" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	redis_pid=$(cat "$redis_dir/redis.pid" 2>/dev/null || true)
	if [[ -z $redis_pid ]] || ! redis-cli -s "$redis_sock" ping >/dev/null 2>&1; then
		log "redis-server did not start; see $redis_dir/redis.log"
		tail -n 20 "$redis_dir/redis.log" >&2 || true
		exit 1
	fi
}

# start_node starts cluster node i (on its port, with its own directory) and waits until
# it answers; a node that was part of the cluster before comes back with its
# nodes.conf and its AOF.
start_node() {
	local i=$1 port=${cluster_ports[$1]} dir=$redis_dir/cluster-${cluster_ports[$1]} n
	mkdir -p "$dir"
	rm -f "$dir/redis.pid"
	redis-server \
		--port "$port" --bind 127.0.0.1 \
		--cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
		--dir "$dir" \
		--appendonly yes --appendfsync everysec \
		--maxmemory-policy noeviction \
		--save "" \
		--daemonize yes --pidfile "$dir/redis.pid" \
		--logfile "$dir/redis.log"
	for ((n = 0; n < 100; n++)); do
		redis-cli -p "$port" ping >/dev/null 2>&1 && break
		sleep 0.1
	done
	cluster_pids[i]=$(cat "$dir/redis.pid" 2>/dev/null || true)
	if [[ -z ${cluster_pids[i]} ]] || ! redis-cli -p "$port" ping >/dev/null 2>&1; then
		log "redis-server on port $port did not start; see $dir/redis.log"
		tail -n 20 "$dir/redis.log" >&2 || true
		exit 1
	fi
}

# start_cluster starts three masters on CLUSTER_PORT … CLUSTER_PORT+2, makes them a
# cluster the first time (redis-cli --cluster create shares the slots evenly), and
# waits until every node reports cluster_state:ok.
start_cluster() {
	local base=${CLUSTER_PORT:-7000} i port addrs=() n ok
	if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1 || base + 2 + 10000 > 65535)); then
		log "CLUSTER_PORT=$base: needs a port from 1 to 55533 (the nodes use it and the next two, their bus ports +10000)"
		exit 1
	fi
	for ((i = 0; i < 3; i++)); do
		port=$((base + i))
		for p in "$port" "$((port + 10000))"; do
			if (: <>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
				log "port $p is already in use; set CLUSTER_PORT to a free range (the nodes use 3 ports and 3 more 10000 above)"
				exit 1
			fi
		done
		cluster_ports[i]=$port
		addrs+=("127.0.0.1:$port")
	done
	for i in "${!cluster_ports[@]}"; do start_node "$i"; done
	if redis-cli -p "$base" cluster info | grep -q '^cluster_slots_assigned:0'; then
		log "creating the cluster of ${addrs[*]}"
		redis-cli --cluster create "${addrs[@]}" --cluster-yes >"$redis_dir/cluster-create.log" 2>&1 || {
			log "redis-cli --cluster create failed:"
			cat "$redis_dir/cluster-create.log" >&2
			exit 1
		}
	fi
	for ((n = 0; n < 300; n++)); do
		ok=1
		for port in "${cluster_ports[@]}"; do
			redis-cli -p "$port" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=""
		done
		[[ -n $ok ]] && break
		sleep 0.1
	done
	if [[ -z $ok ]]; then
		log "the cluster is not ok after 30s; see $redis_dir/cluster-*/redis.log"
		exit 1
	fi
	REDIS_URL="redis://${addrs[0]}?addr=${addrs[1]}&addr=${addrs[2]}"
	export REDIS_URL
	export STREAM_PARTITIONS=${STREAM_PARTITIONS:-6}
	log "redis cluster of 3 masters started (pids ${cluster_pids[*]}, AOF in $redis_dir/cluster-*), $STREAM_PARTITIONS partitions"
}

if [[ -n $cluster ]]; then
	start_cluster
elif [[ -z ${REDIS_URL:-} ]]; then
	# A unix socket and --port 0: no TCP port at all, so no clash with a Redis on 6379.
	# Socket paths are limited to ~107 bytes; a deep checkout gets its socket in /tmp.
	redis_sock=$redis_dir/redis.sock
	if ((${#redis_sock} > 100)); then
		redis_sock=$(mktemp -u /tmp/clickstream-redis.XXXXXX.sock)
	fi
	if redis-cli -s "$redis_sock" ping >/dev/null 2>&1; then
		log "a redis-server from an earlier run still answers on $redis_sock;"
		log "stop it with: redis-cli -s $redis_sock shutdown"
		exit 1
	fi
	rm -f "$redis_dir/redis.pid"
	start_redis
	export REDIS_URL=unix://$redis_sock
	log "redis started (pid $redis_pid, AOF in $redis_dir)"
else
	log "using REDIS_URL from the environment; not starting Redis"
fi

log "building"
go build -o bin/ ./...

# start starts service i; a restart appends to the same log.
start() {
	local i=$1
	case ${names[i]} in
	processor-*)
		PROCESSOR_ADDR=${addrs[i]} CONSUMER_NAME=$consumer-${names[i]#processor-} \
			"./bin/${bins[i]}" >>"$log_dir/${names[i]}.log" 2>&1 &
		;;
	*) "./bin/${bins[i]}" >>"$log_dir/${names[i]}.log" 2>&1 & ;;
	esac
	pids[i]=$!
}

# wait_ready polls service i's /readyz until it answers 200; a service that exits
# meanwhile, or is not ready in 15 s, stops the run: it would fail again.
wait_ready() {
	local i=$1 name=${names[$1]} pid=${pids[$1]} n
	for ((n = 0; n < 150; n++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start; last lines of $log_dir/$name.log:"
			tail -n 20 "$log_dir/$name.log" >&2 || true
			exit 1
		fi
		http_ok "$(url "${addrs[i]}")/readyz" && return 0
		sleep 0.1
	done
	log "$name not ready after 15s; see $log_dir/$name.log"
	exit 1
}

for i in "${!names[@]}"; do start "$i"; done
for i in "${!names[@]}"; do wait_ready "$i"; done

ingest_url=$(url "$INGEST_ADDR")
query_url=$(url "$QUERY_ADDR")
cat <<EOF

Pipeline is running (Ctrl-C stops it).
  dashboard  $query_url/
  ingest     $ingest_url/v1/events
EOF
case ${DEMO,,} in 1 | t | true) printf '  demo shop  %s/demo/   (click around, then watch the dashboard move)\n' "$ingest_url" ;; esac
cat <<EOF
  queryapi   $query_url/v1/users/:id  /v1/products/:id  /v1/products/top  /v1/pipeline
  redis      $REDIS_URL
  logs       tail -f $log_dir/*.log

Processes:
EOF
for i in "${!names[@]}"; do
	printf '  %-12s pid %-8s %s/readyz\n' "${names[i]}" "${pids[i]}" "$(url "${addrs[i]}")"
done
[[ -z $redis_pid ]] || printf '  %-12s pid %s\n' redis "$redis_pid"
for i in "${!cluster_pids[@]}"; do
	printf '  %-12s pid %-8s 127.0.0.1:%s\n' "redis-$((i + 1))" "${cluster_pids[i]}" "${cluster_ports[i]}"
done
cat <<EOF

Try:
  curl -i -H 'Content-Type: application/json' \\
       -d '{"user_id":"u1","product_id":"p1","type":"click","event_id":"e1"}' \\
       $ingest_url/v1/events
  curl $query_url/v1/users/u1
  kill -9 ${pids[1]}   # a processor: it is restarted, and counts nothing twice

EOF

# exit_reason describes a status from wait: 128+N is death by signal N.
exit_reason() {
	if (($1 > 128)) && sig=$(kill -l "$(($1 - 128))" 2>/dev/null); then
		printf 'killed by SIG%s' "$sig"
	else
		printf 'exit status %s' "$1"
	fi
}

# Supervise until a signal: a service that exits is started again, under the same name
# (a processor keeps its CONSUMER_NAME, so it re-reads its own pending entries at once);
# a Redis of this script's that dies is started again from its AOF. Bash reaps its
# children as they exit, so a dead one fails kill -0 and wait gives its status.
while :; do
	sleep 0.5
	for i in "${!names[@]}"; do
		kill -0 "${pids[i]}" 2>/dev/null && continue
		status=0
		wait "${pids[i]}" 2>/dev/null || status=$?
		log "${names[i]} (pid ${pids[i]}) exited ($(exit_reason "$status")); restarting it"
		start "$i"
		wait_ready "$i"
		log "${names[i]} restarted (pid ${pids[i]})"
	done
	for i in "${!cluster_pids[@]}"; do
		kill -0 "${cluster_pids[i]}" 2>/dev/null && continue
		log "redis on port ${cluster_ports[i]} (pid ${cluster_pids[i]}) exited; restarting it from its AOF"
		start_node "$i"
		log "redis on port ${cluster_ports[i]} restarted (pid ${cluster_pids[i]})"
	done
	if [[ -n $redis_pid ]] && ! kill -0 "$redis_pid" 2>/dev/null; then
		log "redis (pid $redis_pid) exited; restarting it from its AOF (an fsync a second: the last second of writes may be lost)"
		rm -f "$redis_dir/redis.pid"
		start_redis
		log "redis restarted (pid $redis_pid)"
	fi
done
