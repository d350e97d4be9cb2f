"""Tiny health helper, usable as a Swarm healthcheck command.

    python -m registration.common.health http://127.0.0.1:8000/healthz
    python -m registration.common.health --file /tmp/healthy --max-age 30

The first form succeeds when the URL answers 2xx within the timeout; the second when the
heartbeat file (touched by RPC workers while connected to RabbitMQ) is fresh.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_HEARTBEAT_FILE = "/tmp/healthy"


def check_http(url: str, timeout: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            status: int = resp.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def touch_heartbeat(path: str = DEFAULT_HEARTBEAT_FILE) -> None:
    p = Path(path)
    p.touch(exist_ok=True)
    os.utime(p, None)


def clear_heartbeat(path: str = DEFAULT_HEARTBEAT_FILE) -> None:
    Path(path).unlink(missing_ok=True)


def check_heartbeat(path: str = DEFAULT_HEARTBEAT_FILE, max_age: float = 30.0) -> bool:
    try:
        age = time.time() - Path(path).stat().st_mtime
    except OSError:
        return False
    return age <= max_age


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m registration.common.health")
    parser.add_argument("url", nargs="?", help="HTTP URL that must answer 2xx")
    parser.add_argument("--file", help="heartbeat file that must be fresh")
    parser.add_argument("--max-age", type=float, default=30.0)
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    if args.url:
        ok = check_http(args.url, args.timeout)
    elif args.file:
        ok = check_heartbeat(args.file, args.max_age)
    else:
        parser.error("give a URL or --file")
    print("healthy" if ok else "unhealthy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
