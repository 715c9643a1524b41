#!/usr/bin/env bash
# Installs the non-Python things the test suite needs on a Debian machine, and
# pre-builds the Neo4j test server so that the tests never wait for Maven:
#
#   * redis-server, redis-cli      (apt, only if not on PATH; the Redis Cluster tests need >= 7)
#   * ip (iproute2)                (apt, only if not on PATH: the network-namespace host tests)
#   * chromium, chromium-driver    (apt, only if not on PATH: the browser test)
#   * a JDK (17+) and Maven        (apt, only if javac or mvn is not on PATH)
#   * tests/neo4j_server's jar     (Maven; downloads ~130 MB into ~/.m2 the first time)
#
# Idempotent: what is already there is left alone, and the jar is rebuilt only
# when it is missing or older than its sources. Python packages are not
# installed here. Maven's output goes to a log file ($STARLING_MAVEN_LOG,
# default: $TMPDIR/starling-neo4j-build.log); only its tail is shown on failure.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
project_dir="$repo_root/tests/neo4j_server"
jar="$project_dir/target/neo4j-test-server.jar"
maven_log="${STARLING_MAVEN_LOG:-${TMPDIR:-/tmp}/starling-neo4j-build.log}"

log() { printf 'install-test-deps: %s\n' "$*"; }
die() { printf 'install-test-deps: error: %s\n' "$*" >&2; exit 1; }

# --- system packages ---------------------------------------------------------
packages=()
command -v redis-server >/dev/null 2>&1 || packages+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || packages+=(redis-tools)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
if ! command -v javac >/dev/null 2>&1; then
  packages+=(default-jdk-headless)
fi
command -v mvn >/dev/null 2>&1 || packages+=(maven)
# The browser test drives Debian's Chromium through chromedriver (Selenium).
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v chromedriver >/dev/null 2>&1 || packages+=(chromium-driver)

if ((${#packages[@]} > 0)); then
  sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null 2>&1 || die "need root (or sudo) to install: ${packages[*]}"
    sudo=(sudo)
  fi
  log "installing with apt: ${packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

command -v redis-server >/dev/null 2>&1 || die "redis-server is still not on PATH"
redis_major="$(redis-server --version | sed -n 's/.*v=\([0-9]*\)\..*/\1/p')"
((redis_major >= 7)) || die "redis-server $redis_major.x is too old: the Redis Cluster tests need 7 (sharded Pub/Sub, Functions)"
# apt's redis-server package starts a system service on port 6379; the tests do
# not use it (they start their own servers on free ports), so it is left alone.

# --- Neo4j test server -------------------------------------------------------
if [[ -f "$jar" && -d "$project_dir/target/lib" ]] \
  && [[ -z "$(find "$project_dir/pom.xml" "$project_dir/src" -newer "$jar" -print -quit)" ]]; then
  log "Neo4j test server is up to date ($jar)"
  exit 0
fi

log "building the Neo4j test server with Maven (log: $maven_log) ..."
start=$SECONDS
if ! (cd "$project_dir" && mvn -B -ntp -Dstyle.color=never package -DskipTests) >"$maven_log" 2>&1; then
  tail -n 40 "$maven_log" | sed 's/\x1b\[[0-9;]*m//g' >&2
  die "the Maven build failed; full log: $maven_log"
fi
[[ -f "$jar" ]] || die "the Maven build did not produce $jar; see $maven_log"
log "built the Neo4j test server in $((SECONDS - start)) s ($jar)"
