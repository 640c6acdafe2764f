#!/usr/bin/env bash
# Make sure the services DEE's integration tests need are answering on loopback:
#
#   PostgreSQL  127.0.0.1:5432   trust auth over TCP for the roles postgres and root
#   Redis       127.0.0.1:6379   no auth, no persistence
#
# A service that already answers is left alone, so with both running this is a quick no-op.
# Otherwise the server is installed with apt-get if it is missing, then started and waited
# for (ENSURE_SERVICES_TIMEOUT seconds, default 60). Prints one line per service; exits
# non-zero with a message on stderr if a service cannot be brought up.
set -euo pipefail

readonly PG_HOST=127.0.0.1 PG_PORT=5432
readonly REDIS_HOST=127.0.0.1 REDIS_PORT=6379
readonly REDIS_DIR=/var/lib/redis REDIS_LOG_DIR=/var/log/redis
readonly REDIS_LOG=$REDIS_LOG_DIR/ci.log
readonly WAIT_SECONDS=${ENSURE_SERVICES_TIMEOUT:-60}
readonly HBA_MARKER="# dee: trust loopback TCP (added by scripts/ensure-services.sh)"

say() { printf 'ensure-services: %s\n' "$*"; }
note() { printf 'ensure-services: %s\n' "$*" >&2; }
die() {
    printf 'ensure-services: ERROR: %s\n' "$*" >&2
    exit 1
}
have() { command -v "$1" >/dev/null 2>&1; }

# Run a command as root: directly when we are root, through sudo otherwise.
as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif have sudo; then
        sudo "$@"
    else
        die "need root for '$*', but this is not root and sudo is not installed"
    fi
}

# True if something accepts TCP connections on host:port (bash's /dev/tcp, no client needed).
tcp_open() {
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
# apt

APT_UPDATED=0

apt_install() {
    have apt-get || die "$1 is not installed and apt-get is not available; install it by hand"
    if [[ $APT_UPDATED -eq 0 ]]; then
        note "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null ||
            die "apt-get update failed"
        APT_UPDATED=1
    fi
    note "apt-get install $1"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$1" >/dev/null ||
        die "apt-get install $1 failed"
}

# Poll "$@" every half second until it succeeds or WAIT_SECONDS pass.
wait_for() {
    local deadline=$((SECONDS + WAIT_SECONDS))
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

pg_up() {
    if have pg_isready; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
    else
        tcp_open "$PG_HOST" "$PG_PORT"
    fi
}

pg_installed() {
    have pg_ctlcluster && compgen -G '/usr/lib/postgresql/*/bin/postgres' >/dev/null
}

# The newest major version: of the configured clusters if there are any, else of the binaries.
pg_version() {
    local dir=/etc/postgresql ver=""
    if [[ -d $dir ]]; then
        ver=$(ls "$dir" | grep -E '^[0-9]+(\.[0-9]+)?$' | sort -V | tail -1 || true)
    fi
    if [[ -z $ver ]]; then
        ver=$(ls /usr/lib/postgresql | grep -E '^[0-9]+(\.[0-9]+)?$' | sort -V | tail -1 || true)
    fi
    [[ -n $ver ]] || die "PostgreSQL is installed but no server version was found under /usr/lib/postgresql"
    printf '%s\n' "$ver"
}

# Can `role` connect over loopback TCP without a password?
pg_trusts() {
    psql -w -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$1" -d postgres -Atc 'SELECT 1' >/dev/null 2>&1
}

# Put trust lines for loopback TCP at the top of pg_hba.conf (first match wins) and reload.
pg_configure_trust() {
    local ver=$1 hba="/etc/postgresql/$1/main/pg_hba.conf" tmp
    as_root test -f "$hba" || die "no $hba to configure"
    if ! as_root grep -qxF "$HBA_MARKER" "$hba"; then
        note "configuring trust auth for 127.0.0.1 and ::1 in $hba"
        tmp=$(mktemp)
        {
            printf '%s\n' "$HBA_MARKER"
            printf 'host    all    all    127.0.0.1/32    trust\n'
            printf 'host    all    all    ::1/128         trust\n\n'
            as_root cat "$hba"
        } >"$tmp"
        # cp onto the existing file keeps its owner and mode
        as_root cp "$tmp" "$hba"
        rm -f "$tmp"
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main reload ||
        die "could not reload PostgreSQL $ver/main"
    # a reload is a signal; give the server a moment to reread pg_hba.conf
    local i
    for ((i = 0; i < 20; i++)); do
        pg_trusts postgres && return 0
        sleep 0.25
    done
    die "PostgreSQL still refuses passwordless TCP connections as postgres after configuring $hba"
}

# Superuser login roles for root (and the invoking user, when that is someone else).
pg_ensure_roles() {
    local role roles=(root)
    [[ $(id -un) == root || $(id -un) == postgres ]] || roles+=("$(id -un)")
    for role in "${roles[@]}"; do
        psql -w -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres \
            -v role="$role" >/dev/null <<'SQL' || die "could not create PostgreSQL role"
SELECT format('CREATE ROLE %I SUPERUSER LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SQL
    done
}

pg_diagnostics() {
    local ver=$1
    have pg_lsclusters && pg_lsclusters >&2 || true
    local log="/var/log/postgresql/postgresql-$ver-main.log"
    if as_root test -r "$log"; then
        note "last lines of $log:"
        as_root tail -n 20 "$log" >&2 || true
    fi
}

ensure_postgres() {
    if pg_up; then
        say "postgres ok: $PG_HOST:$PG_PORT (already running)"
        return
    fi

    local fresh=0 ver status=0
    if ! pg_installed; then
        apt_install postgresql
        pg_installed || die "installed the postgresql package, but pg_ctlcluster/postgres are still missing"
        fresh=1
    fi
    ver=$(pg_version)

    if [[ ! -f /etc/postgresql/$ver/main/postgresql.conf ]]; then
        note "creating PostgreSQL $ver cluster 'main' on port $PG_PORT"
        as_root pg_createcluster "$ver" main --port "$PG_PORT" >/dev/null ||
            die "pg_createcluster $ver main failed"
        fresh=1
    fi

    # 0 = running, 3 = not running; anything else is a broken cluster (start will say why)
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main status >/dev/null 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        note "starting PostgreSQL $ver/main"
        if ! as_root pg_ctlcluster --skip-systemctl-redirect "$ver" main start; then
            pg_diagnostics "$ver"
            die "could not start PostgreSQL $ver/main"
        fi
    fi

    if ! wait_for pg_up; then
        pg_diagnostics "$ver"
        die "PostgreSQL $ver/main is not accepting connections on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s"
    fi

    if [[ $fresh -eq 1 ]] || ! pg_trusts postgres; then
        pg_configure_trust "$ver"
    fi
    pg_ensure_roles
    pg_trusts root || die "PostgreSQL does not let role root connect over TCP without a password"

    say "postgres ok: $PG_HOST:$PG_PORT (started PostgreSQL $ver/main)"
}

# ---------------------------------------------------------------------------------------------
# Redis

# Prints the server's reply to PING ("PONG" when healthy); fails if nothing answers.
redis_ping_reply() {
    if have redis-cli; then
        timeout 2 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null
        return
    fi
    local reply
    reply=$(timeout 2 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "PING\r\n" >&3
        IFS= read -r line <&3 && printf "%s" "$line"' "$REDIS_HOST" "$REDIS_PORT" 2>/dev/null) ||
        return 1
    reply=${reply%$'\r'}
    printf '%s\n' "${reply#[+-]}"
}

redis_up() { [[ $(redis_ping_reply || true) == PONG ]]; }

redis_start() {
    as_root redis-server --daemonize yes --bind "$@" --port "$REDIS_PORT" \
        --save "" --appendonly no --dir "$REDIS_DIR" --logfile "$REDIS_LOG"
}

ensure_redis() {
    if redis_up; then
        say "redis ok: $REDIS_HOST:$REDIS_PORT (already running)"
        return
    fi
    if tcp_open "$REDIS_HOST" "$REDIS_PORT"; then
        # something owns the port, but not a Redis we can use: starting another would fail
        die "something listens on $REDIS_HOST:$REDIS_PORT but does not answer PING with PONG" \
            "(reply: '$(redis_ping_reply || true)'); a Redis without auth is needed there"
    fi

    if ! have redis-server; then
        apt_install redis-server
        have redis-server || die "installed the redis-server package, but redis-server is still missing"
        # the package's maintainer script may have started a Redis already
        if redis_up; then
            say "redis ok: $REDIS_HOST:$REDIS_PORT (installed and started by the package)"
            return
        fi
    fi

    as_root mkdir -p "$REDIS_DIR" "$REDIS_LOG_DIR"
    note "starting redis-server on $REDIS_HOST:$REDIS_PORT"
    # "-::1" (optional IPv6 loopback) needs Redis >= 6.2; older servers get IPv4 only
    redis_start 127.0.0.1 -::1 || redis_start 127.0.0.1 ||
        die "redis-server failed to start (see $REDIS_LOG)"

    if ! wait_for redis_up; then
        if as_root test -r "$REDIS_LOG"; then
            note "last lines of $REDIS_LOG:"
            as_root tail -n 20 "$REDIS_LOG" >&2 || true
        fi
        die "Redis is not answering PING on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s"
    fi
    say "redis ok: $REDIS_HOST:$REDIS_PORT (started redis-server)"
}

ensure_postgres
ensure_redis
