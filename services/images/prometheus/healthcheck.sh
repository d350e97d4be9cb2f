#!/bin/bash
# Healthy when Prometheus answers 200 on <route prefix>/-/healthy; the prefix (e.g. /prometheus) is $1.
set -eu
exec 3<>/dev/tcp/127.0.0.1/9090
printf 'GET %s/-/healthy HTTP/1.0\r\nHost: localhost\r\n\r\n' "${1:-}" >&3
head -n1 <&3 | grep -q ' 200 '
