"""The network anchor: every worker joins a stack's networks one at a time, before its services start
(Docker's 30 s bulk-sync stall, moby/moby#47396), and it stays deployed with the stack."""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.facts.services import Service
from cluster.operations import Run, Wait, Write
from cluster.plans.anchor import ANCHOR_SERVICE, anchor_stack, anchor_verdict
from cluster.plans.stack import plan_deploy

GOLDEN = Path(__file__).parent / "golden"
REGISTRATION = (GOLDEN / "stack-registration-lab.yaml").read_text()
HELLO = yaml.safe_load((GOLDEN / "stack-hello.yaml").read_text())


def test_the_anchor_joins_every_network_of_the_stack_on_every_worker_and_can_do_nothing_else() -> None:
    anchor_file = anchor_stack(yaml.safe_load(REGISTRATION))
    assert anchor_file is not None
    stack, anchor = yaml.safe_load(REGISTRATION), yaml.safe_load(anchor_file)
    assert anchor["networks"] == stack["networks"], "the same networks, declared as the stack declares them"
    (name,) = anchor["services"]
    service = anchor["services"][name]
    assert name == ANCHOR_SERVICE and service["networks"] == sorted(stack["networks"])
    assert service["deploy"]["mode"] == "global"
    assert service["deploy"]["placement"]["constraints"] == ["node.role == worker"]
    # The image most of the stack's services run: its pull is one the workers need anyway.
    assert service["image"] == "10.20.0.6:5000/swarmlab/app:tag"
    assert service["command"] == ["sleep", "infinity"] and "ports" not in service
    assert service["user"] == "65534:65534" and service["read_only"] is True and service["cap_drop"] == ["ALL"]
    # No task of the cluster runs without a health check (CIS 5.26), and a few processes at most (5.28).
    assert service["healthcheck"]["test"] == ["CMD", "true"] and "disable" not in service["healthcheck"]
    assert service["deploy"]["resources"]["limits"]["pids"] == 8


def test_a_stack_with_one_network_needs_no_anchor() -> None:
    assert anchor_stack(HELLO) is None


def test_the_anchor_is_deployed_and_waited_for_before_the_services_and_kept_with_them() -> None:
    plan = plan_deploy("manager-1", "registration", REGISTRATION, "", [])
    steps = [op for op in plan.operations if isinstance(op, Run | Wait | Write)]
    deploys = [i for i, op in enumerate(steps) if isinstance(op, Run) and "docker stack deploy" in op.command]
    first, full = (steps[i] for i in deploys)
    assert isinstance(first, Run) and isinstance(full, Run)
    anchor_file = f"/root/.swarmlab/stacks/registration.{ANCHOR_SERVICE}.yml"
    assert first.command == f"docker stack deploy -c {anchor_file} registration", "no --prune before the services"
    between = steps[deploys[0] + 1 : deploys[1]]
    assert [op.what for op in between if isinstance(op, Wait)] == [
        "every worker joined the stack's networks, one at a time"
    ]
    # The full deploy names both files, so --prune keeps the anchor.
    assert full.command == (
        f"docker stack deploy --prune -c /root/.swarmlab/stacks/registration.yml -c {anchor_file} registration"
    )


def test_a_deployed_stack_without_its_anchor_is_deployed_again() -> None:
    names = yaml.safe_load(REGISTRATION)["services"]
    states = [Service(f"registration_{n}", replica_status="1/1") for n in names]
    assert plan_deploy("manager-1", "registration", REGISTRATION, REGISTRATION, states).changes
    with_anchor = [*states, Service(f"registration_{ANCHOR_SERVICE}", replica_status="3/3")]
    assert not plan_deploy("manager-1", "registration", REGISTRATION, REGISTRATION, with_anchor).operations


def test_the_wait_ends_when_the_anchor_runs_on_every_worker() -> None:
    verdict = anchor_verdict("registration")
    assert not verdict("").done
    assert not verdict(f"registration_{ANCHOR_SERVICE}|2/3\nregistration_ui|3/3\n").done
    assert verdict(f"registration_ui|0/3\nregistration_{ANCHOR_SERVICE}|3/3\n").done
