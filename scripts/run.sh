#!/usr/bin/env bash
# run.sh runs the whole pipeline on this machine: a private Redis (unless REDIS_URL is
# set), ingest, one processor and queryapi. Ctrl-C stops everything, services first,
# Redis last, and leaves no process behind.
#
#   scripts/run.sh                          # ports 8080 (ingest), 8081 (query), 8082 (processor)
#   INGEST_ADDR=127.0.0.1:9080 scripts/run.sh
#   REDIS_URL=redis://127.0.0.1:6379/0 scripts/run.sh   # use an existing Redis instead
#
# Needs bash 4.3+, Go, redis-server (with redis-cli), and curl or wget. Data and logs go
# to .data/ in the repository (git-ignored). To stop it from another shell, send SIGTERM
# (bash ignores SIGINT in a script started with & from a non-interactive shell).
set -euo pipefail
if ((BASH_VERSINFO[0] * 100 + BASH_VERSINFO[1] < 403)); then
	echo "run.sh: needs bash 4.3 or newer (this is $BASH_VERSION)" >&2
	exit 1
fi

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

export INGEST_ADDR=${INGEST_ADDR:-127.0.0.1:8080}
export QUERY_ADDR=${QUERY_ADDR:-127.0.0.1:8081}
export PROCESSOR_ADDR=${PROCESSOR_ADDR:-127.0.0.1:8082}
export CONSUMER_NAME=${CONSUMER_NAME:-local-1}

redis_dir=$root/.data/redis
log_dir=$root/.data/logs
redis_sock=""   # set when this script owns the Redis
redis_pid=""
pids=()         # service pids, in start order
names=()

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

# alive reports whether any of the pids is still running.
alive() {
	local pid
	for pid; do
		kill -0 "$pid" 2>/dev/null && return 0
	done
	return 1
}

stop_redis() {
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

for tool in go redis-server redis-cli; do
	command -v "$tool" >/dev/null || { log "$tool not found on PATH"; exit 1; }
done
command -v curl >/dev/null || command -v wget >/dev/null || { log "need curl or wget"; exit 1; }
mkdir -p "$redis_dir" "$log_dir"

# A service whose port is taken exits at once, but another program on that port could
# still answer the readiness check below; refuse to start instead.
for addr in "$INGEST_ADDR" "$QUERY_ADDR" "$PROCESSOR_ADDR"; do
	hostport=$(url "$addr")
	hostport=${hostport#http://}
	if (: <>"/dev/tcp/${hostport%:*}/${hostport##*:}") 2>/dev/null; then
		log "$addr is already in use; set INGEST_ADDR, QUERY_ADDR or PROCESSOR_ADDR to free ports"
		exit 1
	fi
done

if [[ -z ${REDIS_URL:-} ]]; then
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
	export REDIS_URL=unix://$redis_sock
	log "redis started (pid $redis_pid, AOF in $redis_dir)"
else
	log "using REDIS_URL from the environment; not starting Redis"
fi

log "building"
go build -o bin/ ./...

start() {
	local name=$1
	"./bin/$name" >"$log_dir/$name.log" 2>&1 &
	pids+=("$!")
	names+=("$name")
}
start ingest
start processor
start queryapi

# wait_ready polls /readyz until it answers 200; a service that exits meanwhile fails the run.
wait_ready() {
	local name=$1 pid=$2 base=$3 i
	for ((i = 0; i < 150; i++)); do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start; last lines of $log_dir/$name.log:"
			tail -n 20 "$log_dir/$name.log" >&2 || true
			exit 1
		fi
		http_ok "$base/readyz" && return 0
		sleep 0.1
	done
	log "$name not ready after 15s; see $log_dir/$name.log"
	exit 1
}
ingest_url=$(url "$INGEST_ADDR")
query_url=$(url "$QUERY_ADDR")
processor_url=$(url "$PROCESSOR_ADDR")
wait_ready ingest "${pids[0]}" "$ingest_url"
wait_ready processor "${pids[1]}" "$processor_url"
wait_ready queryapi "${pids[2]}" "$query_url"

cat <<EOF

Pipeline is running (Ctrl-C stops it).
  ingest     $ingest_url/v1/events
  queryapi   $query_url/v1/users/:id  /v1/products/:id  /v1/products/top  /v1/pipeline
  processor  $processor_url/readyz
  redis      $REDIS_URL
  logs       tail -f $log_dir/*.log

Try:
  curl -i -H 'Content-Type: application/json' \\
       -d '{"user_id":"u1","product_id":"p1","type":"click","event_id":"e1"}' \\
       $ingest_url/v1/events
  curl $query_url/v1/users/u1

EOF

# Run until Ctrl-C or until a service exits on its own; either way, stop everything.
status=0
wait -n || status=$? # the services are this script's only jobs
log "a service exited (status $status); stopping the rest"
exit 1
