#!/usr/bin/env bash
# deps.sh makes sure the programs the pipeline's scripts and tests need are on PATH:
#
#   scripts/deps.sh redis-server        # Redis (redis-server and redis-cli)
#   scripts/deps.sh redis-server cc     # and a working C compiler: go test -race needs cgo
#   scripts/deps.sh node                # node and npm: the tests that drive ingest with Segment's Node SDK
#   scripts/deps.sh chromium            # a headless browser, for the dashboard's browser test
#
# When one is missing it installs it from the system's packages if it runs as root on
# Debian or Ubuntu (apt-get), without starting Redis's system service; otherwise it stops
# at once with the exact command to run. scripts/run.sh, scripts/test.sh and .ci/run call
# it, so a fresh machine with only Go needs nothing else.
set -euo pipefail

log() { printf 'deps.sh: %s\n' "$*" >&2; }

# cc_works compiles and links an empty program, which needs both the compiler and the C
# library's development files (crt1.o, libc.so), as cgo does.
cc_works() {
	local cc tmp ok=0
	cc=$(go env CC 2>/dev/null || echo gcc)
	command -v "$cc" >/dev/null || return 1
	tmp=$(mktemp -d)
	printf 'int main(void) { return 0; }\n' >"$tmp/main.c"
	"$cc" -o "$tmp/main" "$tmp/main.c" >/dev/null 2>&1 || ok=1
	rm -rf "$tmp"
	return "$ok"
}

for want; do
	case $want in
	redis-server | cc | node | chromium) ;;
	*)
		log "unknown dependency $want (known: redis-server, cc, node, chromium)"
		exit 2
		;;
	esac
done

# missing prints the Debian packages that provide what is missing among the arguments.
missing() {
	local want
	for want; do
		case $want in
		redis-server)
			if ! command -v redis-server >/dev/null; then
				echo redis-server
			elif ! command -v redis-cli >/dev/null; then
				# A redis-server built by hand may come without redis-cli, which run.sh
				# needs (the package redis-server depends on redis-tools, which has it).
				echo redis-tools
			fi
			;;
		cc) cc_works || printf '%s\n' gcc libc6-dev ;;
		node)
			# Debian's nodejs (18 on Debian 12, 20 on 13); @segment/analytics-node asks
			# for 20 or later and runs on either. A node installed otherwise (nodesource,
			# nvm) is left alone.
			command -v node >/dev/null || echo nodejs
			command -v npm >/dev/null || echo npm
			;;
		chromium)
			# Debian's package is chromium; other systems name the binary differently,
			# and the browser test (internal/browsertest) looks for all of these.
			if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null &&
				! command -v google-chrome-stable >/dev/null && ! command -v google-chrome >/dev/null; then
				echo chromium
			fi
			;;
		esac
	done
}

mapfile -t pkgs < <(missing "$@")
((${#pkgs[@]} > 0)) || exit 0

if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
	log "missing: ${pkgs[*]}"
	if command -v apt-get >/dev/null; then
		sudo="sudo "
		if [[ $(id -u) == 0 ]] || ! command -v sudo >/dev/null; then
			sudo=""
			log "install them, as root, with:"
		else
			log "install them with:"
		fi
		printf '\n    %sapt-get update && %sapt-get install -y %s\n\n' "$sudo" "$sudo" "${pkgs[*]}" >&2
	else
		log "install them with your system's package manager (macOS: brew install redis; xcode-select --install; brew install --cask chromium)"
	fi
	exit 1
fi

log "installing ${pkgs[*]} (apt-get, as root)"
export DEBIAN_FRONTEND=noninteractive
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
	# Exit 101 tells the package scripts not to start redis-server's system service:
	# the scripts and tests start their own, on unix sockets.
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
apt-get update
apt-get install -y --no-install-recommends "${pkgs[@]}" </dev/null

mapfile -t still < <(missing "$@")
if ((${#still[@]} > 0)); then
	log "still missing after apt-get install: ${still[*]} (is /usr/bin on PATH?)"
	exit 1
fi
