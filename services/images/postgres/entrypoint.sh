#!/bin/sh
# First start (empty PGDATA): initdb with the password from POSTGRES_PASSWORD_FILE, create the
# database, configure scram-sha-256 on all addresses. Later starts: just start. Runs as postgres.
set -eu
: "${PGDATA:=/var/lib/postgresql/data}"
export PGDATA
if [ -n "${POSTGRES_USER_FILE:-}" ]; then
    POSTGRES_USER=$(head -n1 "$POSTGRES_USER_FILE" | tr -d '\r\n')
fi
: "${POSTGRES_USER:=registration}"
: "${POSTGRES_DB:=registration}"
if [ -n "${POSTGRES_PASSWORD:-}" ]; then
    echo "entrypoint: POSTGRES_PASSWORD must not be set; use POSTGRES_PASSWORD_FILE" >&2
    exit 1
fi

mkdir -p "$PGDATA" 2>/dev/null || true
chmod 700 "$PGDATA" 2>/dev/null || true

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    if [ -z "${POSTGRES_PASSWORD_FILE:-}" ] || [ ! -r "$POSTGRES_PASSWORD_FILE" ]; then
        echo "entrypoint: first start needs POSTGRES_PASSWORD_FILE (a readable file)" >&2
        exit 1
    fi
    if [ -n "$(ls -A "$PGDATA" 2>/dev/null)" ]; then
        echo "entrypoint: $PGDATA is not empty but has no PG_VERSION; refusing to initialise" >&2
        exit 1
    fi
    echo "entrypoint: initialising a new cluster in $PGDATA"
    umask 077
    pwfile=$(mktemp)
    head -n1 "$POSTGRES_PASSWORD_FILE" | tr -d '\r\n' > "$pwfile"
    initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=scram-sha-256 \
        --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    {
        echo "listen_addresses = '*'"
        echo "password_encryption = 'scram-sha-256'"
        echo "unix_socket_directories = '/var/run/postgresql'"
        echo "log_destination = 'stderr'"
        echo "logging_collector = off"
    } >> "$PGDATA/postgresql.conf"
    cat > "$PGDATA/pg_hba.conf" <<'HBA'
# TYPE  DATABASE  USER  ADDRESS     METHOD
local   all       all               scram-sha-256
host    all       all   0.0.0.0/0   scram-sha-256
host    all       all   ::/0        scram-sha-256
HBA
    # Create the application database over the local socket only, then stop.
    pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
    PGPASSFILE=$(mktemp)
    printf '*:*:*:%s:%s\n' "$POSTGRES_USER" "$(sed -e 's/\\/\\\\/g' -e 's/:/\\:/g' "$pwfile")" > "$PGPASSFILE"
    export PGPASSFILE
    if [ "$POSTGRES_DB" != "postgres" ]; then
        createdb -h /var/run/postgresql -U "$POSTGRES_USER" "$POSTGRES_DB"
    fi
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    rm -f "$PGPASSFILE" "$pwfile"
    unset PGPASSFILE
    echo "entrypoint: cluster initialised (user $POSTGRES_USER, database $POSTGRES_DB)"
else
    echo "entrypoint: existing cluster in $PGDATA, starting"
fi
# Not before a first start: initdb wants an empty directory (two first starts at once cannot both
# initialise it: the second finds files and refuses, above).
. /usr/local/bin/one-server
hold_data_dir "$PGDATA/swarmlab-server.lock" "${DATA_LOCK_WAIT:-60}"
# jit=off: the image has no LLVM (slim.dpkg.cfg); say so rather than rely on the missing library.
exec postgres -D "$PGDATA" -c jit=off
