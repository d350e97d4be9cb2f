#!/bin/sh
# Makes RabbitMQ's definitions (vhost, users and their permissions, exchanges) from a template and the
# users' password files, then runs rabbitmq-server in the foreground. RabbitMQ imports the definitions
# at every boot (load_definitions, set in a private advanced.config), so a changed password or
# permission applies on the next start; with definitions to import it creates no guest and no default
# user.
#
# RABBITMQ_DEFINITIONS_TEMPLATE (default /etc/rabbitmq/definitions.template.json): RabbitMQ definitions
# (JSON) in which "@@/run/secrets/NAME@@" stands for that file's first line, a user's password. Each user
# is on a line of its own: {"name": "USER", "password": "@@/run/secrets/NAME@@", ...}.
# The passwords are never printed, put on a command line or in the environment: they are read with
# shell built-ins into a file of mode 0600 in a private directory.
#
# Users found in an existing data directory that the definitions do not name (the former shared user,
# guest) are removed once the broker answers.
set -eu
umask 077
export LC_ALL=C
template="${RABBITMQ_DEFINITIONS_TEMPLATE:-/etc/rabbitmq/definitions.template.json}"
definitions=/etc/rabbitmq/private/definitions.json
data_dir=/var/lib/rabbitmq/mnesia

fail() {
    echo "entrypoint: $*" >&2
    exit 1
}

if [ -n "${RABBITMQ_PASSWORD:-}" ] || [ -n "${RABBITMQ_DEFAULT_PASS:-}" ]; then
    fail "no password in the environment: the definitions template names each user's password file"
fi
[ -r "$template" ] || fail "no readable definitions template at $template (RABBITMQ_DEFINITIONS_TEMPLATE)"

# value <- the first line of secret file $1 (built-ins only: no command sees the value).
read_secret() {
    case "$1" in
        /run/secrets/*/* | *..*) fail "not a secret file: $1" ;;
        /run/secrets/?*) ;;
        *) fail "not a secret file: $1" ;;
    esac
    [ -r "$1" ] || fail "cannot read $1"
    value=
    IFS= read -r value <"$1" || true
    value="${value%"$(printf '\r')"}"
    [ -n "$value" ] || fail "$1 is empty"
    # Printable ASCII without quotes or backslashes: it goes into a JSON string as it is.
    case "$value" in
        *[!\ -~]* | *\"* | *\\*) fail "$1: a password must be printable ASCII without quotes or backslashes" ;;
    esac
}

render() {
    while IFS= read -r line || [ -n "$line" ]; do
        out=
        while :; do
            case "$line" in
                *@@/run/secrets/*@@*) ;;
                *) break ;;
            esac
            out="$out${line%%@@/run/secrets/*}"
            rest="/run/secrets/${line#*@@/run/secrets/}"
            line="${rest#*@@}"
            read_secret "${rest%%@@*}"
            out="$out$value"
        done
        printf '%s\n' "$out$line"
    done <"$template"
    value=
}

render >"$definitions.new"
mv "$definitions.new" "$definitions"
printf '[{rabbit, [{load_definitions, "%s"}]}].\n' "$definitions" >"$RABBITMQ_ADVANCED_CONFIG_FILE"
users=$(sed -n 's/.*{"name": *"\([^"]*\)", *"password": *"@@.*/\1/p' "$template" | tr '\n' ' ')
[ -n "$users" ] || fail "$template names no user"

# Only where the data directory already holds a database: a new one gets exactly the defined users.
remove_other_users() {
    waited=0
    until bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' 2>/dev/null; do
        waited=$((waited + 1))
        if [ "$waited" -ge 300 ]; then
            echo "entrypoint: the broker did not answer within 300 s; other users not checked" >&2
            return 0
        fi
        sleep 1
    done
    listed=$(rabbitmqctl -q list_users --no-table-headers 2>/dev/null | cut -f1) || {
        echo "entrypoint: could not list the users; other users not checked" >&2
        return 0
    }
    for user in $listed; do
        case " $users " in *" $user "*) continue ;; esac
        if rabbitmqctl -q delete_user "$user" >/dev/null 2>&1; then
            echo "entrypoint: removed user $user (not in the definitions)"
        else
            echo "entrypoint: could not remove user $user" >&2
        fi
    done
}
if [ -n "$(ls -A "$data_dir" 2>/dev/null)" ]; then
    remove_other_users &
fi

echo "entrypoint: starting RabbitMQ (node ${RABBITMQ_NODENAME}, users: ${users% })"
# Run the server script itself, not Debian's /usr/sbin wrapper: the wrapper sends the logs to
# /var/log/rabbitmq/startup_log and does not pass SIGTERM on (a 10 s stop became a SIGKILL).
for server in /usr/lib/rabbitmq/lib/rabbitmq_server-*/sbin/rabbitmq-server; do :; done
exec "$server"
