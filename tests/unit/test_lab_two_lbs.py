"""The lab with two lbs (lb_count: 2): lb-2, the VIP kept from Docker's IPAM, the VIP forwarder that
publishes the lab's ports in place of a floating IP, both lbs' keys pinned, keepalived in the node image
and started by node-init. With one lb, the lab is made as before."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import keepalived.model as keepalived
import topology
from cluster.config import Config, parse_config
from cluster.errors import ConfigErrors
from cluster.inventory import Role, dump_inventory
from cluster.lab import keys, provider
from cluster.lab.build import node_build_context
from cluster.lab.forwarder import PORTS, forwarder_config, render_forwarder
from cluster.lab.layout import (
    FORWARDER,
    LABEL_CLUSTER,
    LABEL_SHAPE,
    container_name,
    container_names,
    forwarder_ip,
    forwarder_labels,
    forwarder_name,
    known_hosts_text,
    lab_inventory,
    lab_nodes,
    labels,
    node_ports,
    pinned_at,
    published_ports,
    rekeyed,
    reserved_addresses,
    shape,
)
from cluster.lab.rehearsal import nodes as rehearsal
from cluster.progress import PhaseResult, Timings
from cluster.runners import SshRunner
from cluster.state import StatePaths
from tests.unit.test_render import haproxy_command
from tests.unit.test_runner_ssh import Server, assert_through_lb_2, server  # noqa: F401 (the fixture)

ONE = parse_config({})
TWO = parse_config({"lb_count": 2})


def by_name(config: Config) -> dict[str, topology.PlannedNode]:
    return {n.name: n for n in lab_nodes(config)}


def test_two_lbs_make_lb_2_at_7_and_one_lb_the_nodes_as_before() -> None:
    assert [(n.name, n.ip) for n in lab_nodes(TWO) if n.role == "lb"] == [("lb-1", "10.20.0.5"), ("lb-2", "10.20.0.7")]
    assert [n.name for n in lab_nodes(ONE)] == [n.name for n in topology.plan_nodes(ONE.cidr, 3, 3)]
    assert "lb-2" not in by_name(ONE)


def test_the_shape_label_says_two_lbs_and_one_lbs_label_is_the_bytes_before() -> None:
    # The label of a one-lb lab already up: lab-up finds it the same lab after this change.
    assert shape(ONE) == '{"cidr": "10.20.0.0/24", "managers": 3, "workers": 3}'
    assert json.loads(shape(TWO)) == {"cidr": "10.20.0.0/24", "managers": 3, "workers": 3, "lbs": 2}


def test_with_two_lbs_no_node_publishes_a_port_and_with_one_the_lb_publishes_the_four() -> None:
    assert node_ports(ONE, by_name(ONE)["lb-1"]) == published_ports(ONE)
    assert set(published_ports(ONE)) == {"80/tcp", "443/tcp", "22/tcp", "8404/tcp"}
    assert all(node_ports(TWO, node) == {} for node in lab_nodes(TWO))
    assert all(node_ports(ONE, node) == {} for node in lab_nodes(ONE) if node.role != "lb")


def test_the_vip_is_reserved_from_dockers_ipam_and_no_lab_container_is_given_it() -> None:
    vip = topology.vip_address(TWO.cidr)
    assert vip == "10.20.0.4" and reserved_addresses(TWO) == {"vip": vip}
    assert reserved_addresses(ONE) is None  # the network is made as before
    addresses = [n.ip for n in lab_nodes(TWO)] + [forwarder_ip(TWO)]
    assert vip not in addresses and len(set(addresses)) == len(addresses)
    # Not the network's address nor Docker's gateway (.1), inside the cidr.
    assert forwarder_ip(TWO) == "10.20.0.3"


def test_the_inventory_of_two_lbs_has_the_vip_and_both_lbs_at_the_published_address() -> None:
    inventory = lab_inventory(TWO, StatePaths(Path("/state")))
    assert str(inventory.network.vip) == "10.20.0.4"
    assert [(lb.name, str(lb.public_ip)) for lb in inventory.lbs] == [("lb-1", "127.0.0.1"), ("lb-2", "127.0.0.1")]
    assert inventory.lb.name == "lb-1" and inventory.ssh.jump_port == TWO.ssh_port
    # The URLs make demo prints are the inventory's: the same with two lbs as with one.
    assert inventory.endpoints == lab_inventory(ONE, StatePaths(Path("/state"))).endpoints
    assert "vip" not in json.loads(dump_inventory(lab_inventory(ONE, StatePaths(Path("/state")))))["network"]


def test_the_forwarder_is_one_more_lab_container_labelled_for_lab_down() -> None:
    assert container_names(ONE) == {container_name(ONE, n) for n in lab_nodes(ONE)}
    assert container_names(TWO) == {container_name(TWO, n) for n in lab_nodes(TWO)} | {forwarder_name(TWO)}
    found = forwarder_labels(TWO)
    assert found[LABEL_CLUSTER] == "demo" and found[LABEL_SHAPE] == shape(TWO)  # lab-down and the shape check see it
    assert "swarmlab.node" not in found  # no node: node_container never finds it by a node's name


# --- known_hosts ---------------------------------------------------------------------------------------


def public_keys(config: Config) -> dict[str, str]:
    return {n.name: keys.new_key_pair(n.name).public_openssh for n in lab_nodes(config)}


def entries(text: str) -> list[tuple[str, str]]:
    return [(line.split()[0], line.split()[2]) for line in text.splitlines()]


def blob(public: str) -> str:
    return public.split()[1]


def test_one_lbs_known_hosts_is_the_lines_it_was() -> None:
    found = public_keys(ONE)
    before = [keys.known_hosts_line(*provider_ssh_endpoint(ONE, n), found[n.name]) for n in lab_nodes(ONE)]
    assert known_hosts_text(ONE, found) == "\n".join(before) + "\n"


def provider_ssh_endpoint(config: Config, node: topology.PlannedNode) -> tuple[str, int]:
    """What make_keys pinned before two lbs: the lb at the published port, the others at their address."""
    return (str(config.bind_address), config.ssh_port) if node.role == "lb" else (node.ip, 22)


def test_two_lbs_keys_are_pinned_at_the_published_port_lb_1_first_and_each_at_its_own_address() -> None:
    found = public_keys(TWO)
    pins = entries(known_hosts_text(TWO, found))
    shared = f"[127.0.0.1]:{TWO.ssh_port}"
    assert [b for name, b in pins if name == shared] == [blob(found["lb-1"]), blob(found["lb-2"])]
    assert (("10.20.0.5", blob(found["lb-1"])) in pins) and (("10.20.0.7", blob(found["lb-2"])) in pins)
    assert ("10.20.0.21", blob(found["worker-1"])) in pins
    assert len(pins) == len(lab_nodes(TWO)) + 2


def test_a_recreated_lb_of_two_gets_its_new_key_everywhere_and_the_other_lb_keeps_its_own() -> None:
    found = public_keys(TWO)
    lb1 = by_name(TWO)["lb-1"]
    new = keys.new_key_pair("lb-1").public_openssh
    pins = entries(rekeyed(known_hosts_text(TWO, found), TWO, lb1, new))
    shared = f"[127.0.0.1]:{TWO.ssh_port}"
    assert sorted(b for name, b in pins if name == shared) == sorted([blob(found["lb-2"]), blob(new)])
    assert ("10.20.0.5", blob(new)) in pins and blob(found["lb-1"]) not in [b for _, b in pins]
    assert ("10.20.0.7", blob(found["lb-2"])) in pins and len(pins) == len(lab_nodes(TWO)) + 2


def test_a_recreated_node_of_one_lb_is_rekeyed_as_before() -> None:
    found = public_keys(ONE)
    text = known_hosts_text(ONE, found)
    for name in ("lb-1", "worker-2"):
        node = by_name(ONE)[name]
        new = keys.new_key_pair(name).public_openssh
        host, port = provider_ssh_endpoint(ONE, node)
        prefix = f"{host} " if port == 22 else f"[{host}]:{port} "
        before = [k for k in text.splitlines() if not k.startswith(prefix)] + [keys.known_hosts_line(host, port, new)]
        assert rekeyed(text, ONE, node, new) == "\n".join(before) + "\n"
    assert pinned_at(ONE, by_name(ONE)["lb-1"]) == (("127.0.0.1", ONE.ssh_port),)


def test_the_runner_falls_back_to_lb_2_with_the_known_hosts_the_lab_writes(
    server: Server,  # noqa: F811 (the fixture)
    tmp_path: Path,
) -> None:
    """The lab's own known_hosts and inventory (two lbs, the test server standing in for the forwarder
    where lb-2 holds the VIP): lb-1's key does not answer there, so the runner goes through lb-2."""
    config = parse_config({"lb_count": 2, "cidr": "127.0.0.0/24", "ssh_port": server.port})
    paths = StatePaths(tmp_path)
    paths.private_key.write_bytes(keys.new_key_pair("client").private_openssh)
    paths.private_key.chmod(0o600)
    found = public_keys(config) | {"lb-2": server.host_key.public_openssh}
    paths.known_hosts.write_text(known_hosts_text(config, found))
    nodes = SshRunner(lab_inventory(config, paths))
    try:
        assert_through_lb_2(nodes)
    finally:
        nodes.close()


# --- the VIP forwarder -------------------------------------------------------------------------------


def test_the_forwarder_forwards_each_published_port_to_the_vip() -> None:
    config = forwarder_config(TWO)
    text = render_forwarder(config)
    assert {f"{p.port}/tcp" for p in PORTS} == set(published_ports(TWO))
    for port in PORTS:
        section = text.split(f"listen {port.name}\n")[1].split("\nlisten ")[0]
        assert f"    bind :{port.port}\n" in section
        assert f"server vip 10.20.0.4:{port.port}" in section
        # Only SSH reaches an lb other than through the VIP: the web ports answer from the holder or not at all.
        assert ("backup" in section) == (port.name == "ssh")
    ssh = text.split("listen ssh\n")[1].split("\nlisten ")[0]
    assert ssh.index("server lb-1 10.20.0.5:22 backup") < ssh.index("server lb-2 10.20.0.7:22 backup")
    assert "check port 8404" in ssh  # the VIP serves SSH while its holder's HAProxy answers
    assert "mode tcp" in text and "retries 8" in text and "timeout connect 1s" in text


def test_the_forwarder_is_for_two_lbs_only() -> None:
    with pytest.raises(ValueError, match="two lbs"):
        forwarder_config(ONE)


def test_haproxy_accepts_the_forwarders_configuration(tmp_path: Path) -> None:
    command = haproxy_command(tmp_path)
    if command is None:
        pytest.skip("no haproxy binary and no swarmlab/node image here")
    tmp_path.chmod(0o755)
    (tmp_path / "forwarder.cfg").write_text(render_forwarder(forwarder_config(TWO)))
    (tmp_path / "forwarder.cfg").chmod(0o644)
    done = subprocess.run(
        [*command, "-c", "-f", str(tmp_path / "forwarder.cfg")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0 and "Configuration file is valid" in done.stdout + done.stderr, done.stderr
    assert "WARNING" not in done.stdout + done.stderr, done.stderr


# --- lab-up with a fake engine ---------------------------------------------------------------------


class FakeContainer:
    def __init__(self, name: str = "", labels: dict[str, str] | None = None) -> None:
        self.name, self.labels = name, labels or {}
        self.archives: list[bytes] = []
        self.started = False
        self.status = "running"
        self.attrs = {"NetworkSettings": {"Networks": {"n": {"IPAddress": "10.20.0.3"}}}}

    def put_archive(self, path: str, data: bytes) -> None:
        self.archives.append(data)

    def start(self) -> None:
        self.started = True


class FakeApi:
    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def create_networking_config(self, config: Any) -> Any:
        return config

    def create_endpoint_config(self, **kwargs: Any) -> dict[str, Any]:
        return kwargs

    def create_container(self, image: str, **kwargs: Any) -> dict[str, str]:
        self.created = {"image": image, **kwargs}
        return {"Id": "forwarder"}


class FakeNetworks:
    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def create(self, name: str, **kwargs: Any) -> None:
        self.created = {"name": name, **kwargs}


class FakeVolumes:
    def create(self, name: str, **kwargs: Any) -> None:
        pass


class FakeContainers:
    def __init__(self) -> None:
        self.container = FakeContainer()

    def get(self, ident: str) -> FakeContainer:
        return self.container


class FakeEngine:
    def __init__(self) -> None:
        self.api = FakeApi()
        self.networks = FakeNetworks()
        self.volumes = FakeVolumes()
        self.containers = FakeContainers()


def build(config: Config, engine: FakeEngine | None = None) -> provider.LabBuild:
    found = provider.LabBuild(config, engine, StatePaths(Path("/state")))  # type: ignore[arg-type]
    found.image = "swarmlab/node:test"
    return found


def test_the_forwarder_container_publishes_the_ports_at_its_own_address_with_its_config() -> None:
    engine = FakeEngine()
    provider.create_forwarder(build(TWO, engine), PhaseResult("lab-forwarder"))
    created = engine.api.created
    assert created["image"] == "swarmlab/node:test" and created["name"] == forwarder_name(TWO)
    assert created["host_config"]["port_bindings"] == {
        int(p.split("/")[0]): binding for p, binding in published_ports(TWO).items()
    }
    assert created["networking_config"] == {"swarmlab-demo": {"ipv4_address": "10.20.0.3"}}
    assert created["labels"] == forwarder_labels(TWO) and created["entrypoint"][-1].endswith("haproxy.cfg")
    assert "cap_add" not in created["host_config"]  # a plain container: no engine, no extra capability
    container = engine.containers.container
    assert container.started and b"server vip 10.20.0.4:443" in container.archives[0]


@pytest.mark.parametrize(("config", "aux"), [(ONE, None), (TWO, {"vip": "10.20.0.4"})])
def test_the_network_reserves_the_vip_with_two_lbs(config: Config, aux: dict[str, str] | None) -> None:
    engine = FakeEngine()
    provider.create_network(build(config, engine), PhaseResult("network"))
    [pool] = engine.networks.created["ipam"]["Config"]
    assert pool["Subnet"] == "10.20.0.0/24" and pool.get("AuxiliaryAddresses") == aux


@pytest.mark.parametrize(("config", "publishing"), [(ONE, {"lb-1"}), (TWO, set())])
def test_which_node_containers_publish_the_lab_ports(
    monkeypatch: pytest.MonkeyPatch, config: Config, publishing: set[str]
) -> None:
    made: dict[str, dict[str, Any]] = {}

    def create(engine: Any, image: str, **kwargs: Any) -> FakeContainer:
        made[kwargs["hostname"]] = kwargs
        return FakeContainer()

    monkeypatch.setattr(provider, "create_node_container", create)
    lab = build(config, FakeEngine())
    lab.authorized_key = "ssh-ed25519 AAAA client"
    lab.host_keys = {n.name: keys.new_key_pair(n.name) for n in lab_nodes(config)}
    for node in lab_nodes(config):
        if node.role == "lb":
            provider._create_node(lab, node)
    assert {name for name, kwargs in made.items() if kwargs["ports"]} == publishing
    assert {name: kwargs["ip"] for name, kwargs in made.items()} == {
        n.name: n.ip for n in lab_nodes(config) if n.role == "lb"
    }


def test_the_forwarder_is_made_after_the_nodes_and_before_anything_goes_through_it() -> None:
    assert provider.create_actions(ONE) == provider.CREATE_ACTIONS
    names = [name for name, _, _ in provider.create_actions(TWO)]
    assert names.index("lab-nodes") < names.index("lab-forwarder") < names.index("lab-ready")


def test_a_lab_up_that_fails_at_the_forwarder_removes_what_it_made(monkeypatch: pytest.MonkeyPatch) -> None:
    done: list[str] = []

    def step(name: str) -> Any:
        return lambda build, progress: done.append(name)

    def broken(build: Any, progress: Any) -> None:
        raise RuntimeError("the forwarder failed")

    class Engine:
        containers = type("C", (), {"list": staticmethod(lambda **kwargs: [])})()

    monkeypatch.setattr(provider, "ensure_engine", lambda progress: None)
    monkeypatch.setattr(provider, "client", Engine)
    monkeypatch.setattr(provider, "CREATE_ACTIONS", tuple((n, n, step(n)) for n in ("lab-nodes", "lab-ready")))
    monkeypatch.setattr(provider, "FORWARDER_ACTION", ("lab-forwarder", "", broken))
    monkeypatch.setattr(provider, "lab_down", lambda config, timings, quiet=False: done.append("lab-down"))
    with pytest.raises(RuntimeError, match="the forwarder failed"):
        provider.lab_up(TWO, Timings())
    assert done == ["lab-nodes", "lab-down"]  # not refused; lab-down removes the lab's containers by its label


def test_the_rehearsal_still_refuses_two_lbs_before_the_engine_is_touched(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rehearsal, "ensure_engine", lambda *args: pytest.fail("the engine was touched"))
    with pytest.raises(ConfigErrors) as caught:
        rehearsal.make_rehearsal(TWO, Timings())
    [error] = caught.value.errors
    assert (error.key, error.value) == ("lb_count", 2) and "the rehearsal makes one lb node" in error.problem


def test_lab_ready_waits_for_lb_1_first_then_for_every_other_node_lb_2_too(monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[str] = []

    class Runner:
        def __init__(self, inventory: Any) -> None:
            pass

        def run(self, node: Any, command: str) -> None:
            ran.append(node.name)
            assert (command == "true") == (node.role is Role.LB)

        def each(self, nodes: Any, work: Any, step: str) -> None:
            for node in nodes:
                work(node)

        def close(self) -> None:
            pass

    monkeypatch.setattr(provider, "SshRunner", Runner)
    provider.wait_ready(build(TWO), PhaseResult("lab-ready"))
    assert ran[0] == "lb-1" and sorted(ran) == sorted(n.name for n in lab_nodes(TWO))


def test_lab_status_lists_the_forwarder_by_its_name(monkeypatch: pytest.MonkeyPatch) -> None:
    node = FakeContainer("swarmlab-demo-lb-2", labels(TWO, by_name(TWO)["lb-2"]))
    forwarder = FakeContainer(forwarder_name(TWO), forwarder_labels(TWO))
    monkeypatch.setattr(provider, "client", lambda: None)
    monkeypatch.setattr(provider, "lab_containers", lambda engine, cluster: [node, forwarder])
    rows = provider.lab_status_rows(TWO)
    assert [row[:2] for row in rows] == [("lb-2", "lb"), (FORWARDER, FORWARDER)]


# --- keepalived in the node image and node-init --------------------------------------------------------


def test_two_lbs_node_image_installs_keepalived_and_one_lbs_is_the_image_before() -> None:
    one, two = node_build_context(ONE, "base:1"), node_build_context(TWO, "base:1")
    assert b"keepalived" not in one.files["provision/lb.sh"] + one.files["node-init.sh"]
    assert b"apt_install keepalived" in two.files["provision/lb.sh"]
    assert one.tag != two.tag  # an image of its own; the one-lb image's inputs are untouched
    assert {name for name in one.files if one.files[name] != two.files[name]} == {"provision/lb.sh", "node-init.sh"}


def test_node_init_starts_keepalived_from_its_pid_file_after_removing_a_stale_one() -> None:
    init = node_build_context(TWO, "base:1").files["node-init.sh"].decode()
    block = init.split('if [ "$role" = lb ]; then')[1].split("\nfi\n")[0]
    assert block.index(f"rm -f {keepalived.PID_FILE}") < block.index(keepalived.DAEMON.start)
    assert f"if [ -s {keepalived.CONFIG_PATH} ]" in block  # as Debian's unit: only once the push wrote it
    # The daemon spec the keepalived task pushes with: started with the pid file its facts and `ready` read.
    assert f"-p {keepalived.PID_FILE}" in keepalived.DAEMON.start and keepalived.PID_FILE in str(
        keepalived.DAEMON.ready
    )
    assert init.index("keepalived") < init.index("exec /usr/sbin/sshd")


@pytest.mark.skipif(shutil.which("sh") is None, reason="no sh")
@pytest.mark.parametrize("config", [ONE, TWO])
def test_node_init_is_valid_shell(tmp_path: Path, config: Config) -> None:
    script = tmp_path / "node-init.sh"
    script.write_bytes(node_build_context(config, "base:1").files["node-init.sh"])
    done = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr


def test_the_lab_nodes_have_the_capabilities_keepalived_needs() -> None:
    """VRRP's raw socket (NET_RAW) and the VIP put on an interface (NET_ADMIN): every capability but one."""
    from cluster.lab.engine import NESTED_CAP_ADD, NESTED_CAP_DROP

    assert NESTED_CAP_ADD == ["ALL"] and not {"NET_ADMIN", "NET_RAW"} & set(NESTED_CAP_DROP)
