"""The rehearsal's pure parts: the Pulumi program's own user data in each node's NoCloud seed, the stack
configuration it runs with, the stand-in for `pulumi stack output`, and the Pulumi provider reading it."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from cluster.config import parse_config
from cluster.errors import SwarmlabError
from cluster.facts.daemons import DaemonFacts, daemon_facts, parse_daemon_facts
from cluster.inventory import Role
from cluster.lab import keys
from cluster.lab.rehearsal import nodes, plan, stack
from cluster.lab.rehearsal.image import FSTAB_UNIT, PACKAGES, image_context
from cluster.lab.rehearsal.nodes import booted
from cluster.lab.rehearsal.program import ProgramRun, parse_program_run
from cluster.lab.rehearsal.provider import RehearsalProvider
from cluster.operations import Run
from cluster.plans.registry import plan_certificate
from cluster.progress import PhaseResult
from cluster.providers import provider_named
from cluster.providers.pulumi import STACK_OUTPUT_COMMAND, PulumiProvider
from infra import rehearsal as program
from infra.cloudinit import PROVISION_PATH
from registry.model import SERVICE_USER, TLS_DIR
from topology import DATA_ROOT

CONFIG = {"cluster": "rehearsal", "cidr": "10.40.0.0/24"}


@pytest.fixture(scope="module")
def program_run() -> ProgramRun:
    config = parse_config(CONFIG)
    user = keys.new_key_pair("swarmlab-rehearsal")
    # The program in this process (`fab rehearsal-up` runs it in its own: python -m infra.rehearsal), its
    # result through the JSON the process hands back.
    run = program.run_program(
        plan.stack_config(config, user.public_openssh, "/state/id_ed25519"), plan.floating_ip(config)
    )
    return parse_program_run(json.dumps(asdict(run)))


def test_the_program_renders_user_data_for_every_node_of_the_rehearsal(program_run: ProgramRun) -> None:
    assert sorted(program_run.servers) == sorted(
        ["lb-1", "storage-1", "manager-1", "manager-2", "manager-3", "worker-1", "worker-2", "worker-3"]
    )
    for name, server in program_run.servers.items():
        document = yaml.safe_load(server.user_data)
        assert server.user_data.startswith("#cloud-config")
        assert document["hostname"] == name
        assert document["ssh_genkeytypes"] == ["ed25519"]
        assert PROVISION_PATH in json.dumps(document["runcmd"])
    # The key pair's public key goes through Nova's metadata, as with `key_pair` or `public_key` on a cloud.
    assert len(program_run.public_keys) == 1 and program_run.public_keys[0].startswith("ssh-ed25519 ")


def test_the_inventory_output_pins_the_host_keys_the_user_data_installs(program_run: ProgramRun) -> None:
    inventory = program_run.outputs["inventory"]
    assert inventory["network"]["cidr"] == "10.40.0.0/24"
    lb = next(n for n in inventory["nodes"] if n["role"] == "lb")
    # The floating IP is the lb's own address on the rehearsal network, which this machine routes to.
    assert lb["public_ip"] == lb["private_ip"] == "10.40.0.5"
    for name, public in inventory["ssh"]["host_keys"].items():
        document = yaml.safe_load(program_run.servers[name].user_data)
        assert document["ssh_keys"]["ed25519_public"] == public


def test_only_the_storage_node_waits_for_a_data_device(program_run: ProgramRun) -> None:
    devices = {name: plan.data_device(server.user_data) for name, server in program_run.servers.items()}
    assert str(devices.pop("storage-1")).startswith("/dev/disk/by-id/virtio-")
    assert set(devices.values()) == {None}


def test_the_seed_holds_the_user_data_unchanged_and_the_key_in_the_meta_data() -> None:
    files = plan.seed_files("rehearsal-worker-1", "worker-1", "#cloud-config\nhostname: worker-1\n", ["ssh-ed25519 K"])
    assert files[f"{plan.SEED_DIR}/user-data"] == b"#cloud-config\nhostname: worker-1\n"
    assert yaml.safe_load(files[f"{plan.SEED_DIR}/meta-data"]) == {
        "instance-id": "rehearsal-worker-1",
        "local-hostname": "worker-1",
        "public-keys": ["ssh-ed25519 K"],
    }


def test_the_stack_configuration_is_the_rehearsals_shape() -> None:
    config = parse_config({**CONFIG, "managers": 1, "workers": 2})
    found = plan.stack_config(config, "ssh-ed25519 K", "/state/id_ed25519")
    assert found["private_cidr"] == "10.40.0.0/24"
    assert (found["manager_count"], found["worker_count"]) == ("1", "2")
    assert found["admin_cidrs"] == "10.40.0.1/32"  # the host's side of the bridge
    assert "key_pair" not in found and found["public_key"] == "ssh-ed25519 K"


def test_the_rehearsal_is_the_pulumi_provider_with_a_stand_in_for_its_cli() -> None:
    provider = provider_named("rehearsal")
    assert isinstance(provider, RehearsalProvider) and isinstance(provider, PulumiProvider)
    # No lab shortcut: no image cache, the storage node debootstraps the base image itself.
    assert provider.image_cache is None
    assert PulumiProvider.stack_output_command == STACK_OUTPUT_COMMAND
    assert provider.stack_output_command[0] == sys.executable


def test_the_stand_in_prints_the_stack_output_the_provider_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, program_run: ProgramRun, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWARMLAB_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("SWARMLAB_CLUSTER", "rehearsal")
    config = parse_config({**CONFIG, "state_dir": str(tmp_path)})
    path = stack.outputs_path(config)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"inventory": program_run.outputs["inventory"]}))
    assert stack.main(["output", "inventory", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == program_run.outputs["inventory"]
    assert stack.main(["output", "nothing"]) == 1
    inventory = RehearsalProvider().inventory(config, "rehearsal")  # runs the stand-in as a command
    assert inventory.lb.role is Role.LB and inventory.ssh.host_keys


def test_the_stand_in_says_when_the_rehearsal_is_not_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SWARMLAB_STATE_DIR", str(tmp_path))
    assert stack.main(["output", "inventory", "--json"]) == 1
    assert "rehearsal-up" in capsys.readouterr().err


def test_the_registry_user_may_enter_its_key_directory() -> None:
    # Found by the rehearsal: Debian's unit runs the registry as its own user, and the key's directory
    # was root's 0700, so the registry could not read its key on a systemd node.
    run = [
        op
        for op in plan_certificate("storage-1", b"chain", b"key", "", "x").operations
        if isinstance(op, Run) and "chown" in op.command
    ]
    assert len(run) == 1
    assert f"chgrp {SERVICE_USER} {TLS_DIR} && chmod 750 {TLS_DIR}" in run[0].command


def test_a_daemon_under_systemd_runs_when_its_unit_is_active() -> None:
    # Found by the rehearsal: Debian's docker-registry unit writes no pid file, so every task run
    # found the registry "not running" and restarted it.
    command = daemon_facts("/etc/docker/registry/config.yml", "/run/docker-registry.pid", "docker-registry").command
    assert "systemctl is-active --quiet docker-registry" in command
    # Without systemd (the lab), the pid file says: run the command here with no pid file.
    no_systemd = daemon_facts("/nonexistent.cfg", "/nonexistent.pid").command
    assert "systemctl" not in no_systemd
    output = subprocess.run(["sh", "-c", no_systemd], capture_output=True, text=True, check=True).stdout
    assert parse_daemon_facts(output) == DaemonFacts("", systemd=parse_daemon_facts(output).systemd, running=False)


def test_the_cloud_image_is_plain_debian_with_cloud_init_and_nothing_of_ours() -> None:
    config = parse_config(CONFIG)
    context = image_context(config, "swarmlab/debian:bookworm-0123456789ab")
    dockerfile = context.files["Dockerfile"].decode()
    assert dockerfile.startswith("# ") and "FROM swarmlab/debian:bookworm-0123456789ab" in dockerfile
    for package in ("systemd-sysv", "cloud-init", "openssh-server", "locales", "dbus"):
        assert package in PACKAGES and package in dockerfile
    assert "locale-gen" in dockerfile and "rm -f /etc/ssh/ssh_host_*" in dockerfile
    # No provisioning at build time: cloud-init runs the user data at first boot.
    assert "swarmlab-provision" not in dockerfile and "COPY provision" not in dockerfile
    assert sorted(context.files) == ["Dockerfile", FSTAB_UNIT]
    assert image_context(config, "swarmlab/debian:bookworm-0123456789ab").tag == context.tag
    assert image_context(config, "swarmlab/debian:bookworm-ba9876543210").tag != context.tag


def test_a_started_node_has_booted_when_systemd_says_running_or_degraded() -> None:
    assert booted("running\n").done and booted("degraded\n").done
    assert not booted("starting\n").done and not booted("").done


def test_workers_see_the_storage_volume_through_the_share_and_every_node_boots_again_after_a_reboot(
    program_run: ProgramRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: dict[str, dict[str, Any]] = {}

    class Container:
        def put_archive(self, path: str, data: bytes) -> None: ...
        def start(self) -> None: ...

    def create(engine: object, image: str, **kwargs: Any) -> Container:
        created[kwargs["hostname"]] = kwargs
        return Container()

    class Volumes:
        def create(self, name: str, labels: dict[str, str]) -> SimpleNamespace:
            return SimpleNamespace(name=name)

    monkeypatch.setattr(nodes, "create_node_container", create)
    config = parse_config(CONFIG)
    r = nodes.Rehearsal(config, SimpleNamespace(volumes=Volumes()), config.state(provider="rehearsal"))  # type: ignore[arg-type]
    r.program, r.loop_device = program_run, "/dev/loop9"
    for node in r.nodes:
        nodes._create_node(r, node)
    share = nodes.share_point(r)
    assert share.endswith("/storage-volume-share")
    for name, kwargs in created.items():
        assert kwargs["restart_policy"] == {"Name": "on-failure"}, name  # `systemctl reboot` exits PID 1
        bound = kwargs["binds"].get(share)
        if name.startswith("worker-"):
            assert bound == {"bind": DATA_ROOT, "mode": "rw,rslave"}, name
        else:
            assert bound is None, name
    assert "/dev/loop9:/dev/loop9:rwm" in created["storage-1"]["devices"]


def test_a_directory_bound_onto_itself_counts_as_a_mount(tmp_path: Path) -> None:
    # Recorded on this machine after `mount --bind D D` and a loop device mounted on D; os.path.ismount
    # says False for the first alone (same filesystem), and rehearsal-down must not rmtree through it.
    share = "/root/.local/state/swarmlab/rehearsal/rehearsal-test/storage-volume-share"
    table = tmp_path / "mountinfo"
    table.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        f"46 27 254:0 {share} {share} rw,relatime shared:2 - ext4 /dev/vda rw\n"
        f"52 46 7:0 / {share} rw,relatime shared:3 - ext4 /dev/loop0 rw\n"
    )
    assert nodes.mounts_at(share, str(table)) == 2
    assert nodes.mounts_at(share + "/data", str(table)) == 0


def test_a_labs_kept_engine_volumes_stop_a_rehearsal_of_its_name_before_anything_is_made() -> None:
    """A lab keeps its nodes' engines in volumes named like a rehearsal's (its image cache): seen when a
    rehearsal named like a downed lab booted its managers into that lab's swarm. Its own volumes, from a
    rehearsal before, and other clusters' are no obstacle."""
    config = parse_config(CONFIG)

    def volume(name: str, kind: str | None) -> SimpleNamespace:
        return SimpleNamespace(name=name, attrs={"Labels": {"swarmlab.kind": kind} if kind else {}})

    found = [
        volume("swarmlab-rehearsal-manager-1-docker", None),  # a lab's
        volume("swarmlab-rehearsal-worker-2-docker", "rehearsal"),  # a rehearsal's own, from before
        volume("swarmlab-rehearsal-registry-cache", None),  # a lab's, but no name a rehearsal makes
    ]
    engine = SimpleNamespace(
        containers=SimpleNamespace(list=lambda **_: []),
        networks=SimpleNamespace(list=list),
        volumes=SimpleNamespace(list=lambda filters: [v for v in found if v.name.startswith(filters["name"])]),
    )
    r = nodes.Rehearsal(config, engine, config.state(provider="rehearsal"))  # type: ignore[arg-type]
    assert nodes.foreign_volumes(r) == ["swarmlab-rehearsal-manager-1-docker"]
    with pytest.raises(SwarmlabError, match=r"swarmlab-rehearsal-manager-1-docker exist .*lab-down --purge"):
        nodes.check_free(r, PhaseResult("rehearsal-checks"))
    found.pop(0)
    nodes.check_free(r, PhaseResult("rehearsal-checks"))  # nothing in the way
