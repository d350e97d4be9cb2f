"""events: what happened to the swarm (services, nodes, secrets, configs, networks) over a past window,
read from a manager (`docker events --since ... --until 0s`: a bounded read, not a stream), so a rolling
update or the loss of a node can be followed after the fact. Read-only."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cluster.durations import parse_duration
from cluster.errors import ConfigError, OptionErrors
from cluster.facts import SwarmEvent, events_command, parse_events
from cluster.session import Session
from cluster.tasks.swarm import find_leader

EVENT_TYPES = ("service", "node", "secret", "config", "network")
DEFAULT_SINCE = "1h"


@dataclass(frozen=True)
class EventQuery:
    since_seconds: int
    types: tuple[str, ...] = ()  # none: every swarm type


def event_query(since: str = DEFAULT_SINCE, types: str = "") -> EventQuery:
    """--since and --type (one type or several, comma-separated), checked before anything runs."""
    problems: list[ConfigError] = []
    seconds = 0
    try:
        seconds = parse_duration(since, "--since")
    except ConfigError as error:
        problems.append(error)
    wanted = tuple(t.strip() for t in types.split(",") if t.strip())
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        problems.append(
            ConfigError(
                "--type", types, f"has no swarm event type {', '.join(unknown)}", f"use {'|'.join(EVENT_TYPES)}"
            )
        )
    if problems:
        raise OptionErrors(problems)
    return EventQuery(seconds, tuple(dict.fromkeys(wanted)))


def format_event(event: SwarmEvent) -> str:
    """`time  type  action  name  key=value...` (what changed: old and new states, availability...)."""
    moment = datetime.fromtimestamp(event.time_ns // 1_000_000_000, UTC)
    millis = (event.time_ns // 1_000_000) % 1000
    when = f"{moment:%Y-%m-%dT%H:%M:%S}.{millis:03d}Z"
    details = " ".join(f"{key}={value}" for key, value in event.attributes)
    return f"{when}  {event.type:<7}  {event.action:<6}  {event.name}{'  ' + details if details else ''}"


def swarm_events(session: Session, query: EventQuery, out: Callable[[str], None]) -> int:
    """Print the swarm's events of the window, oldest first; returns how many."""
    leader = find_leader(session.runner)
    events = parse_events(session.runner.run(leader, events_command(query.since_seconds, query.types)).stdout)
    for event in sorted(events, key=lambda e: e.time_ns):
        out(format_event(event))
    return len(events)
