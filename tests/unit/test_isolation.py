"""Tenant isolation: the DOCKER-USER rules rendered for a cluster, the script that applies them, and the
plan that keeps them (rendering/isolation.py, cluster/plans/isolation.py, cluster/tasks/isolation.py)."""

from __future__ import annotations

import hashlib
import shlex

import pytest

import topology
from cluster.errors import SwarmlabError
from cluster.facts.firewall import IsolationState
from cluster.inventory import Inventory
from cluster.operations import Run, Write
from cluster.plans.isolation import plan_isolation
from cluster.tasks.isolation import cluster_rules, data_hosts
from rendering.isolation import (
    Rule,
    cluster_isolation_script,
    isolation_dropin,
    isolation_rules,
    isolation_script,
)
from tests.unit.fake_runner import lab_shaped_inventory as inventory

CIDR = "10.53.0.0/24"
STORAGE = "10.53.0.6"
LB, LB2 = "10.53.0.5", "10.53.0.7"
FIVE = {"ssh", "swarm-tcp", "swarm-udp", "metadata"}
FROM_LBS = {"edge-ports", "map-port"}


def by_name(rules: tuple[Rule, ...]) -> dict[str, tuple[str, ...]]:
    return {rule.name: rule.args for rule in rules}


def test_containers_are_refused_the_storage_node_every_ssh_and_swarm_port_and_the_metadata_service() -> None:
    rules = by_name(isolation_rules(CIDR, [STORAGE], [LB]))
    assert set(rules) == {f"data-{STORAGE}", *FIVE, *FROM_LBS}
    # Everything on the storage node: NFS (2049, and 111/20048 if a client asks), the registry (5000), its SSH.
    assert rules[f"data-{STORAGE}"][:2] == ("-d", f"{STORAGE}/32")
    assert "--dport" not in rules[f"data-{STORAGE}"] and "-p" not in rules[f"data-{STORAGE}"]
    assert rules["ssh"][:6] == ("-d", CIDR, "-p", "tcp", "--dport", "22")
    # The engines' own ports (Raft, gossip, VXLAN): a container could forge VXLAN frames into any overlay.
    assert rules["swarm-tcp"][:7] == ("-d", CIDR, "-p", "tcp", "-m", "multiport", "--dports")
    assert rules["swarm-tcp"][7] == "2377,7946"
    assert rules["swarm-udp"][2:4] == ("-p", "udp") and rules["swarm-udp"][7] == "4789,7946"
    assert rules["metadata"][:2] == ("-d", "169.254.169.254/32")
    for args in rules.values():
        # New connections only (a published port's answers pass), refused at once, named by a comment.
        assert args[-2:] == ("-j", "REJECT")
        assert args[args.index("--ctstate") : args.index("--ctstate") + 2] == ("--ctstate", "NEW")
        assert args[args.index("--comment") + 1].startswith("swarmlab-isolation:")


def test_what_tasks_must_reach_is_not_refused() -> None:
    """Prometheus scrapes the engines (9323) and HAProxy (8405) at node addresses; DNS, the overlays and
    the Internet are not matched either: no rule names a node address other than the data tier's, the
    node network is matched on SSH's and Swarm's ports, and on the published ports (for all but the lbs)."""
    for rule in isolation_rules(CIDR, [STORAGE], [LB]):
        if rule.name in FROM_LBS:
            destination = rule.args[rule.args.index("--ctorigdst") + 1]
            assert destination == CIDR and rule.args[rule.args.index("--ctorigdstport") + 1] in ("8000:8099", "9080")
            continue
        destination = rule.args[rule.args.index("-d") + 1]
        ports = rule.args[rule.args.index("--dport") + 1] if "--dport" in rule.args else ""
        ports = rule.args[rule.args.index("--dports") + 1] if "--dports" in rule.args else ports
        assert destination in (f"{STORAGE}/32", "169.254.169.254/32") or (
            destination == CIDR and set(ports.split(",")) <= {"22", "2377", "7946", "4789"}
        ), rule
        assert "9323" not in ports and "8405" not in ports


def test_published_ports_answer_the_lb_nodes_only() -> None:
    """The services' host-mode ports (8000-8099: the UI, the API, Prometheus, the lab's mail sink) and
    the map's (9080), as the node network's address was asked before Docker's DNAT: every source but
    the lb(s) is refused. Two lbs: one negated in -s, the other in --ctorigsrc (iptables negates one
    address per match)."""
    one = by_name(isolation_rules(CIDR, [STORAGE], [LB]))
    assert one["edge-ports"][:12] == (
        "-p", "tcp", "!", "-s", f"{LB}/32", "-m", "conntrack",
        "--ctorigdst", CIDR, "--ctorigdstport", "8000:8099", "-m",
    )  # fmt: skip
    assert one["map-port"][one["map-port"].index("--ctorigdstport") + 1] == "9080"
    two = by_name(isolation_rules(CIDR, [STORAGE], [LB2, LB]))
    assert two["edge-ports"][:10] == (
        "-p",
        "tcp",
        "!",
        "-s",
        f"{LB}/32",
        "-m",
        "conntrack",
        "!",
        "--ctorigsrc",
        f"{LB2}/32",
    )
    assert cluster_isolation_script(CIDR, 2) == isolation_script(isolation_rules(CIDR, [STORAGE], [LB, LB2]))
    with pytest.raises(ValueError, match="lb 'lb-1' is not an IPv4 address"):
        isolation_rules(CIDR, [STORAGE], ["lb-1"])
    with pytest.raises(ValueError, match="0 lb addresses"):
        isolation_rules(CIDR, [STORAGE], [])


def test_data_hosts_are_deduplicated_sorted_and_must_be_addresses() -> None:
    rules = isolation_rules(CIDR, ["10.53.0.7", STORAGE, STORAGE], [LB])
    assert [r.name for r in rules][:6] == [
        "data-10.53.0.6",
        "data-10.53.0.7",
        "ssh",
        "swarm-tcp",
        "swarm-udp",
        "metadata",
    ]
    with pytest.raises(ValueError, match=r"'registry\.example' is not an IPv4 address"):
        isolation_rules(CIDR, ["registry.example"], [LB])
    with pytest.raises(ValueError, match="no data-tier host"):
        isolation_rules(CIDR, [], [LB])


def test_the_script_checks_each_rule_before_inserting_it() -> None:
    rules = isolation_rules(CIDR, [STORAGE], [LB])
    script = isolation_script(rules)
    assert script.startswith("#!/bin/sh\n") and "set -eu" in script
    assert 'iptables -w -C DOCKER-USER "$@" 2>/dev/null' in script
    assert 'iptables -w -I DOCKER-USER "$@"' in script
    ensured = [shlex.split(line)[1:] for line in script.splitlines() if line.startswith("ensure ")]
    assert ensured == [list(rule.args) for rule in rules]
    assert "no change, 7 DOCKER-USER rules in place" in script
    assert cluster_isolation_script(CIDR, 1) == script  # the lab's and cloud-init's: the storage node's address


def test_the_dropin_runs_the_script_after_each_engine_start() -> None:
    dropin = isolation_dropin()
    assert "[Service]" in dropin
    assert f"ExecStartPost=/bin/sh -c 'if [ -x {topology.ISOLATION_SCRIPT} ]" in dropin


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


RULES = isolation_rules(CIDR, [STORAGE], [LB])
SCRIPT = isolation_script(RULES)
DROPIN = isolation_dropin()
IN_PLACE = frozenset(r.name for r in RULES)


def test_a_node_with_its_rules_and_script_is_left_alone() -> None:
    plan = plan_isolation("worker-1", RULES, SCRIPT, DROPIN, IsolationState(sha(SCRIPT), "", False, IN_PLACE))
    assert plan.operations == ()
    assert plan.notes == ("worker-1: 7 DOCKER-USER rules already in place",)


def test_a_node_missing_a_rule_runs_the_script() -> None:
    state = IsolationState(sha(SCRIPT), "", False, IN_PLACE - {"ssh"})
    plan = plan_isolation("worker-1", RULES, SCRIPT, DROPIN, state)
    [run] = plan.operations
    assert isinstance(run, Run) and run.command == topology.ISOLATION_SCRIPT and run.changes
    assert "ssh" in run.why


def test_a_fresh_node_gets_the_script_then_runs_it() -> None:
    plan = plan_isolation("worker-1", RULES, SCRIPT, DROPIN, IsolationState("", "", False, frozenset()))
    writes = [op for op in plan.operations if isinstance(op, Write)]
    assert [(w.path, w.mode) for w in writes] == [(topology.ISOLATION_SCRIPT, 0o755)]
    assert plan.runs[-1].command == topology.ISOLATION_SCRIPT
    assert plan.changes


def test_under_systemd_the_dropin_is_written_and_systemd_reloaded() -> None:
    state = IsolationState(sha(SCRIPT), "", True, IN_PLACE)
    plan = plan_isolation("worker-1", RULES, SCRIPT, DROPIN, state)
    assert [op.path for op in plan.operations if isinstance(op, Write)] == [topology.ISOLATION_DROPIN]
    assert [r.command for r in plan.runs if "daemon-reload" in r.command] == ["systemctl daemon-reload"]
    assert topology.ISOLATION_SCRIPT not in [r.command for r in plan.runs]  # its rules are in place
    done = IsolationState(sha(SCRIPT), sha(DROPIN), True, IN_PLACE)
    assert plan_isolation("worker-1", RULES, SCRIPT, DROPIN, done).operations == ()


def test_a_rule_this_cluster_no_longer_renders_is_named() -> None:
    state = IsolationState(sha(SCRIPT), "", False, IN_PLACE | {"data-10.53.0.9"})
    plan = plan_isolation("worker-1", RULES, SCRIPT, DROPIN, state)
    assert plan.operations == ()
    assert any("data-10.53.0.9" in note for note in plan.notes)


def test_the_task_takes_the_data_tier_from_the_inventory() -> None:
    cluster = inventory()
    assert cluster.storage is not None
    storage = str(cluster.storage.private_ip)
    assert set(data_hosts(cluster)) == {storage}
    assert by_name(cluster_rules(cluster)).keys() == {f"data-{storage}", *FIVE, *FROM_LBS}
    edge = by_name(cluster_rules(cluster))["edge-ports"]
    assert edge[edge.index("-s") - 1 : edge.index("-s") + 2] == ("!", "-s", f"{cluster.lb.private_ip}/32")
    document = cluster.model_dump(mode="json")
    document["endpoints"]["registry"] = "registry.example:5000"
    with pytest.raises(SwarmlabError, match=r"registry\.example"):
        cluster_rules(Inventory.model_validate(document))
