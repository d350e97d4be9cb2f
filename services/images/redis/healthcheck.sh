#!/bin/sh
# redis-cli ping; REDISCLI_AUTH keeps the password off the command line.
set -eu
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    REDISCLI_AUTH=$(head -n1 "$REDIS_PASSWORD_FILE" | tr -d '\r\n')
    export REDISCLI_AUTH
fi
[ "$(redis-cli -h 127.0.0.1 -p "${REDIS_PORT:-6379}" ping 2>/dev/null)" = "PONG" ]
