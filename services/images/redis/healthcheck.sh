#!/bin/sh
# redis-cli ping. With a password, AUTH goes on redis-cli's standard input (printf is a shell
# built-in), so the password is on no command line and in no environment.
set -eu
port="${REDIS_PORT:-6379}"
if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    pw=
    IFS= read -r pw <"$REDIS_PASSWORD_FILE" || true
    pw="${pw%"$(printf '\r')"}"
    answer=$(printf 'AUTH "%s"\nPING\n' "$pw" | redis-cli -h 127.0.0.1 -p "$port" 2>/dev/null | tail -n1)
else
    answer=$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)
fi
[ "$answer" = "PONG" ]
