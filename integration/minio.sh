#!/usr/bin/env bash
# integration/minio.sh: the local MinIO setup for tierkv's tests and users.
#
#   integration/minio.sh install          build the pinned MinIO server into the cache (once)
#   integration/minio.sh start [DATADIR]  start it on a free loopback port; prints env exports
#   integration/minio.sh env              print the env exports of the running server
#   integration/minio.sh stop             stop the server started by `start` (by its pid)
#   integration/minio.sh run -- CMD...    start, run CMD with the exports set, stop
#
# Environment:
#   TIERKV_CACHE        cache directory (default ~/.cache/tierkv); the binary is $TIERKV_CACHE/bin/minio
#   TIERKV_MINIO_STATE  state file of `start` (default $TIERKV_CACHE/minio.state)
#   GO                  the go command (default go)
#
# `start` prints, and `env` repeats:
#   export TIERKV_MINIO_ENDPOINT=http://127.0.0.1:PORT
#   export TIERKV_MINIO_ACCESS_KEY=... TIERKV_MINIO_SECRET_KEY=...
# Tests (objectstore/miniotest) use that server when TIERKV_MINIO_ENDPOINT is
# set, and otherwise start their own from the cached binary.
set -euo pipefail

MINIO_MODULE=github.com/minio/minio
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c # pinned; change with care
CACHE=${TIERKV_CACHE:-$HOME/.cache/tierkv}
BIN=$CACHE/bin/minio
STATE=${TIERKV_MINIO_STATE:-$CACHE/minio.state}
GO=${GO:-go}
ACCESS_KEY=tierkvadmin
SECRET_KEY=tierkvadmin-secret
# A static KMS key (a test key, not a secret) so that the server accepts
# SSE-S3 and SSE-KMS (key id tierkv-test-key). Same as objectstore/miniotest.
KMS_SECRET_KEY=tierkv-test-key:qlp720rurzielvq1duLqxB/HRctHPXi4AHtqFGfFzOA=

log() { echo "minio.sh: $*" >&2; }

installed_version() {
	# `minio --version` of a `go install` build says DEVELOPMENT.GOGET, so
	# read the module version that the Go toolchain recorded in the binary.
	[ -x "$BIN" ] || return 1
	"$GO" version -m "$BIN" 2>/dev/null | awk '$1 == "mod" && $2 == "'"$MINIO_MODULE"'" { print $3 }'
}

cmd_install() {
	if [ "$(installed_version || true)" = "$MINIO_VERSION" ]; then
		log "MinIO $MINIO_VERSION already installed at $BIN"
		return 0
	fi
	mkdir -p "$CACHE/bin"
	log "building MinIO $MINIO_VERSION into $BIN (one time, about two minutes)..."
	local start=$SECONDS
	# Build into a temporary GOBIN and move it in place, so that an
	# interrupted build never leaves a half-written binary in the cache.
	local tmpbin
	tmpbin=$(mktemp -d "$CACHE/bin/.install.XXXXXX")
	trap 'rm -rf "$tmpbin"' RETURN
	GOBIN=$tmpbin CGO_ENABLED=0 GOFLAGS=-buildvcs=false "$GO" install -trimpath "$MINIO_MODULE@$MINIO_VERSION"
	mv -f "$tmpbin/minio" "$BIN"
	log "installed MinIO $(installed_version) in $((SECONDS - start))s"
}

free_port() {
	# A random port in 20000-59999 that nothing listens on.
	local port
	for _ in $(seq 1 100); do
		port=$((20000 + RANDOM % 40000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	log "no free port found"
	return 1
}

healthy() {
	local url="http://127.0.0.1:$1/minio/health/live"
	if command -v curl >/dev/null; then
		curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null
	else
		# Plain bash: HTTP/1.0 request over /dev/tcp.
		(exec 3<>"/dev/tcp/127.0.0.1/$1" && printf 'GET /minio/health/live HTTP/1.0\r\n\r\n' >&3 && head -n1 <&3 | grep -q ' 200 ') 2>/dev/null
	fi
}

print_env() {
	echo "export TIERKV_MINIO_ENDPOINT=http://127.0.0.1:$1"
	echo "export TIERKV_MINIO_ACCESS_KEY=$ACCESS_KEY"
	echo "export TIERKV_MINIO_SECRET_KEY=$SECRET_KEY"
}

cmd_start() {
	if [ -f "$STATE" ]; then
		# shellcheck disable=SC1090
		. "$STATE"
		if kill -0 "$PID" 2>/dev/null; then
			log "already running (pid $PID); stop it first"
			print_env "$PORT"
			return 0
		fi
		rm -f "$STATE"
	fi
	[ -x "$BIN" ] || { log "MinIO is not installed: run $0 install"; return 1; }
	local datadir=${1:-} owned=0
	if [ -z "$datadir" ]; then
		datadir=$(mktemp -d "${TMPDIR:-/tmp}/tierkv-minio.XXXXXX")
		owned=1
	fi
	mkdir -p "$datadir" "$(dirname "$STATE")"
	local logfile="$CACHE/minio.log" port console pid
	for _ in 1 2 3 4 5; do
		port=$(free_port)
		console=$(free_port)
		[ "$port" != "$console" ] || continue
		MINIO_ROOT_USER=$ACCESS_KEY MINIO_ROOT_PASSWORD=$SECRET_KEY MINIO_BROWSER=off \
			MINIO_UPDATE=off MINIO_KMS_SECRET_KEY=$KMS_SECRET_KEY \
			setsid "$BIN" server --quiet --address "127.0.0.1:$port" \
			--console-address "127.0.0.1:$console" "$datadir" >"$logfile" 2>&1 </dev/null &
		pid=$!
		local deadline=$((SECONDS + 60))
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
			if healthy "$port"; then
				printf 'PID=%s\nPORT=%s\nDATADIR=%q\nOWNED=%s\n' "$pid" "$port" "$datadir" "$owned" >"$STATE"
				log "MinIO running at http://127.0.0.1:$port (pid $pid, data $datadir, log $logfile)"
				print_env "$port"
				return 0
			fi
			sleep 0.2
		done
		if kill -0 "$pid" 2>/dev/null; then
			kill "$pid" 2>/dev/null || true
			log "MinIO did not become healthy within 60s; log:"
			tail -n 20 "$logfile" >&2
			return 1
		fi
		log "MinIO exited at start (port taken?), retrying; log:"
		tail -n 5 "$logfile" >&2
	done
	return 1
}

cmd_env() {
	[ -f "$STATE" ] || { log "not running (no $STATE)"; return 1; }
	# shellcheck disable=SC1090
	. "$STATE"
	print_env "$PORT"
}

cmd_stop() {
	[ -f "$STATE" ] || { log "not running (no $STATE)"; return 0; }
	# shellcheck disable=SC1090
	. "$STATE"
	if kill -0 "$PID" 2>/dev/null; then
		kill "$PID"
		for _ in $(seq 1 100); do
			kill -0 "$PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$PID" 2>/dev/null; then
			log "pid $PID still running after 10s; sending SIGKILL"
			kill -9 "$PID" 2>/dev/null || true
		fi
	fi
	if [ "${OWNED:-0}" = 1 ]; then rm -rf "$DATADIR"; fi
	rm -f "$STATE"
	log "stopped (pid $PID)"
}

cmd_run() {
	[ "${1:-}" = "--" ] && shift
	[ $# -gt 0 ] || { log "usage: $0 run -- CMD..."; return 2; }
	eval "$(cmd_start)"
	trap cmd_stop EXIT
	"$@"
}

case "${1:-}" in
install) cmd_install ;;
start) shift; cmd_start "$@" ;;
env) cmd_env ;;
stop) cmd_stop ;;
run) shift; cmd_run "$@" ;;
*)
	sed -n '2,12p' "$0" >&2
	exit 2
	;;
esac
