#!/bin/sh
# Writes a private config (mode 0600) and starts redis in the foreground. The password, if any,
# comes from REDIS_PASSWORD_FILE and is never printed or put on a command line.
set -eu
umask 077
conf=/run/redis-conf/redis.conf
port="${REDIS_PORT:-6379}"
{
    echo "bind 0.0.0.0 -::*"
    echo "port ${port}"
    echo "dir /data"
    echo "daemonize no"
    echo "supervised no"
    echo "logfile \"\""
    # REDIS_APPENDONLY=yes: every write also goes to the append-only file, fsynced before Redis answers
    # (REDIS_APPENDFSYNC, "always" by default): a server killed with its node loses no write it
    # acknowledged. RDB snapshots alone lost the eligible list's last minutes under make chaos.
    case "${REDIS_APPENDONLY:-no}" in
        yes|no) echo "appendonly ${REDIS_APPENDONLY:-no}";;
        *) echo "entrypoint: REDIS_APPENDONLY must be yes or no" >&2; exit 1;;
    esac
    case "${REDIS_APPENDFSYNC:-always}" in
        always|everysec|no) echo "appendfsync ${REDIS_APPENDFSYNC:-always}";;
        *) echo "entrypoint: REDIS_APPENDFSYNC must be always, everysec or no" >&2; exit 1;;
    esac
    # RDB snapshots into /data (mount a volume there to keep the eligible list across restarts);
    # REDIS_SAVE="" turns them off (e.g. for the session store).
    echo "save \"${REDIS_SAVE-3600 1 300 100 60 10000}\""
    echo "dbfilename dump.rdb"
    if [ -n "${REDIS_MAXMEMORY:-}" ]; then
        echo "maxmemory ${REDIS_MAXMEMORY}"
        # TTL-aware by default (only keys with a TTL are evicted): REDIS_MAXMEMORY_POLICY may say which.
        case "${REDIS_MAXMEMORY_POLICY:-volatile-lru}" in
            volatile-lru|volatile-lfu|volatile-ttl|volatile-random|noeviction) ;;
            *) echo "entrypoint: REDIS_MAXMEMORY_POLICY must be a volatile-* policy or noeviction" >&2; exit 1;;
        esac
        echo "maxmemory-policy ${REDIS_MAXMEMORY_POLICY:-volatile-lru}"
    fi
} > "$conf"
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    if [ ! -r "$REDIS_PASSWORD_FILE" ]; then
        echo "entrypoint: cannot read REDIS_PASSWORD_FILE" >&2
        exit 1
    fi
    pw=$(head -n1 "$REDIS_PASSWORD_FILE" | tr -d '\r\n')
    case "$pw" in *\"*|*\\*|*" "*) echo "entrypoint: Redis password must not contain quotes, backslashes or spaces" >&2; exit 1;; esac
    echo "protected-mode yes" >> "$conf"
    echo "requirepass \"${pw}\"" >> "$conf"
    unset pw
else
    echo "entrypoint: no REDIS_PASSWORD_FILE, running without a password (protected-mode off)" >&2
    echo "protected-mode no" >> "$conf"
fi
# Only where /data is writable: the session store runs on a read-only root with no data directory.
if [ -w /data ]; then
    . /usr/local/bin/one-server
    hold_data_dir /data/swarmlab-server.lock "${DATA_LOCK_WAIT:-60}"
fi
exec redis-server "$conf"
