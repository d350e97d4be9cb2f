#!/bin/sh
# Writes the default user/password (from secret files) into a private advanced.config (mode
# 0600, never printed), then runs rabbitmq-server in the foreground.
set -eu
umask 077
if [ -n "${RABBITMQ_USER_FILE:-}" ]; then
    user=$(head -n1 "$RABBITMQ_USER_FILE" | tr -d '\r\n')
else
    user="${RABBITMQ_USER:-registration}"
fi
if [ -n "${RABBITMQ_PASSWORD:-}" ]; then
    echo "entrypoint: RABBITMQ_PASSWORD must not be set; use RABBITMQ_PASSWORD_FILE" >&2
    exit 1
fi
if [ -z "${RABBITMQ_PASSWORD_FILE:-}" ] || [ ! -r "${RABBITMQ_PASSWORD_FILE}" ]; then
    echo "entrypoint: RABBITMQ_PASSWORD_FILE must name a readable file" >&2
    exit 1
fi
pass=$(head -n1 "$RABBITMQ_PASSWORD_FILE" | tr -d '\r\n')
if [ -z "$user" ] || [ -z "$pass" ]; then
    echo "entrypoint: empty RabbitMQ user or password" >&2
    exit 1
fi
# Erlang binary literals: escape backslashes and double quotes.
esc() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }
printf '[{rabbit, [{default_user, <<"%s">>}, {default_pass, <<"%s">>}, {default_vhost, <<"/">>}, {default_permissions, [<<".*">>, <<".*">>, <<".*">>]}]}].\n' \
    "$(esc "$user")" "$(esc "$pass")" > "$RABBITMQ_ADVANCED_CONFIG_FILE"
unset pass
echo "entrypoint: starting RabbitMQ (node ${RABBITMQ_NODENAME}, default user ${user})"
# Run the server script itself, not Debian's /usr/sbin wrapper: the wrapper sends the logs to
# /var/log/rabbitmq/startup_log and does not pass SIGTERM on (a 10 s stop became a SIGKILL).
for server in /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server; do :; done
exec "$server"
