"""Push a daemon's configuration to a node and reload or start it, as its plan says."""

from __future__ import annotations

from cluster.daemon import Daemon, parse_facts, plan_push
from cluster.inventory import Node
from cluster.progress import PhaseResult
from cluster.runners import Nodes


def push_config(nodes: Nodes, node: Node, daemon: Daemon, text: str, progress: PhaseResult) -> bool:
    """Returns whether anything was done (False: the file is current and the daemon runs)."""
    steps = plan_push(daemon, parse_facts(nodes.run(node, daemon.facts_command).stdout), text)
    for step in steps:
        if step.upload:
            nodes.write(node, daemon.new_path, text, mode=0o644)
            continue
        nodes.run(node, step.command)
        if step.change:
            progress.changed(step.why)
    if not steps:
        progress.note(f"{daemon.config_path} is current and {daemon.name} runs")
    return bool(steps)
