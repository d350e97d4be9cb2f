"""keepalived for two lbs: rendered for each node, checked with Debian's `keepalived -t`, and its password
a generated secret that stays out of reprs and errors."""

from __future__ import annotations

import ipaddress
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import topology
from cluster.credentials import VRRP_PASSWORD, load_or_create, vrrp_password
from cluster.facts.network import interface_with
from keepalived.model import (
    CHECK_COMMAND,
    CONFIG_MODE,
    DAEMON,
    KeepalivedConfig,
    build,
    render_config,
    virtual_router_id,
)

KEEPALIVED = shutil.which("keepalived") or next(
    (str(p) for p in (Path("/usr/sbin/keepalived"), Path("/sbin/keepalived")) if p.exists()), None
)
CIDR = ipaddress.IPv4Network("10.20.0.0/24")
LBS = tuple((n.name, n.ip) for n in topology.plan_nodes(CIDR, 3, 3, lbs=2) if n.role == "lb")
VIP = topology.vip_address(CIDR)
PASSWORD = "Xy7_-k2Q"


def config_of(node: str, interface: str = "ens3", password: str = PASSWORD) -> KeepalivedConfig:
    return build(cluster="demo", lbs=LBS, node=node, vip=VIP, cidr=CIDR, interface=interface, password=password)


def setting(text: str, key: str) -> str:
    [value] = re.findall(rf"^\s*{key} (.+)$", text, flags=re.MULTILINE)
    return str(value)


def block(text: str, name: str) -> list[str]:
    """The lines inside `name { ... }` (one level)."""
    found = re.search(rf"^\s*{name} {{\n(.*?)^\s*}}", text, flags=re.MULTILINE | re.DOTALL)
    assert found is not None, name
    return [line.strip() for line in found.group(1).splitlines() if line.strip()]


def test_each_lb_speaks_unicast_from_its_address_to_the_other() -> None:
    assert LBS == (("lb-1", "10.20.0.5"), ("lb-2", "10.20.0.7")) and VIP == "10.20.0.4"
    one, two = render_config(config_of("lb-1")), render_config(config_of("lb-2"))
    assert (setting(one, "unicast_src_ip"), block(one, "unicast_peer")) == ("10.20.0.5", ["10.20.0.7"])
    assert (setting(two, "unicast_src_ip"), block(two, "unicast_peer")) == ("10.20.0.7", ["10.20.0.5"])
    for text in (one, two):
        assert block(text, "virtual_ipaddress") == ["10.20.0.4/24 dev ens3"]
        assert setting(text, "interface") == "ens3"
        assert setting(text, "virtual_router_id") == str(virtual_router_id("demo"))


def test_priorities_differ_and_neither_preempts() -> None:
    one, two = render_config(config_of("lb-1")), render_config(config_of("lb-2"))
    assert (int(setting(one, "priority")), int(setting(two, "priority"))) == (150, 100)
    # nopreempt works only from BACKUP: both start so, and a recovered lb leaves the VIP where it is.
    for text in (one, two):
        assert setting(text, "state") == "BACKUP"
        assert re.search(r"^\s*nopreempt$", text, flags=re.MULTILINE)


def test_the_vip_follows_haproxy_through_a_tracked_check() -> None:
    text = render_config(config_of("lb-1"))
    check = block(text, "vrrp_script haproxy")
    assert f'script "{CHECK_COMMAND}"' in check
    assert f"http://127.0.0.1:{topology.STATS_PORT}/stats" in CHECK_COMMAND
    assert {"interval 1", "fall 2", "rise 2"} <= set(check)
    # No weight: a failing check puts the instance in FAULT, which gives the VIP up whatever the priority.
    assert block(text, "track_script") == ["haproxy"]
    assert not any(line.startswith("weight") for line in check)


def test_the_password_is_in_the_file_only() -> None:
    config = config_of("lb-1")
    text = render_config(config)
    assert block(text, "authentication") == ["auth_type PASS", f"auth_pass {PASSWORD}"]
    assert PASSWORD not in repr(config) and PASSWORD not in str(config)
    assert CONFIG_MODE == 0o600


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"node": "manager-1"}, "manager-1 is not an lb node"),
        ({"vip": "10.20.0.7"}, "must be a free address of 10.20.0.0/24"),
        ({"vip": "10.99.0.4"}, "must be a free address of 10.20.0.0/24"),
        ({"interface": "eth0; reboot"}, "not a network interface name"),
        ({"lbs": LBS[:1]}, "pairs two lb nodes, not 1"),
    ],
)
def test_bad_input_is_refused_with_what_is_wrong(change: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {
        "cluster": "demo",
        "lbs": LBS,
        "node": "lb-1",
        "vip": VIP,
        "cidr": CIDR,
        "interface": "ens3",
        "password": PASSWORD,
    }
    with pytest.raises(ValueError, match=re.escape(message)):
        build(**{**arguments, **change})  # type: ignore[arg-type]


@pytest.mark.parametrize("password", ["", "123456789", "two words", 'a"b', "x}y"])
def test_a_password_keepalived_would_misread_is_refused_without_being_echoed(password: str) -> None:
    with pytest.raises(ValueError, match="1-8 letters") as caught:
        config_of("lb-1", password=password)
    assert not password or password not in str(caught.value)


def test_the_router_id_is_a_vrrp_id_of_the_cluster_name() -> None:
    ids = {virtual_router_id(f"cluster-{i}") for i in range(50)}
    assert all(1 <= i <= 255 for i in ids) and len(ids) > 40
    assert virtual_router_id("demo") == virtual_router_id("demo")


def _interface() -> str:
    """An interface of this machine that is not the loopback (keepalived -t checks it exists, as the node's
    fact would give it; VRRP refuses lo)."""
    names = sorted(p.name for p in Path("/sys/class/net").iterdir() if p.name != "lo")
    assert names, "no network interface besides lo"
    return names[0]


def _check(path: Path) -> tuple[int, str]:
    """What the push runs before the swap (DAEMON.validate), with this machine's keepalived."""
    assert KEEPALIVED is not None and DAEMON.validate == "keepalived -t -f {path}"
    done = subprocess.run(
        [KEEPALIVED, "-t", "-f", str(path)],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return done.returncode, done.stdout + done.stderr


def test_both_configurations_pass_keepalived_t_and_a_broken_one_fails(tmp_path: Path) -> None:
    if KEEPALIVED is None:
        pytest.fail("keepalived is missing: `make check-tools` installs it (Debian: keepalived)")
    interface = _interface()
    for node in ("lb-1", "lb-2"):
        path = tmp_path / f"{node}.conf"
        path.write_text(render_config(config_of(node, interface=interface)))
        status, output = _check(path)
        assert (status, output) == (0, ""), f"{node}: {output}"
    # A configuration keepalived cannot run must fail, or a passing check proves nothing.
    broken = tmp_path / "broken.conf"
    broken.write_text(render_config(config_of("lb-1", interface=interface)).replace("virtual_router_id", "router_idd"))
    status, output = _check(broken)
    assert status != 0 and "router_idd" in output


def test_the_vrrp_password_is_made_once_eight_characters_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    kept = load_or_create(path, ["db_password"])
    first = vrrp_password(path)
    assert re.fullmatch(r"[A-Za-z0-9_-]{8}", first)
    assert vrrp_password(path) == first
    again = load_or_create(path, ["db_password"])
    assert again["db_password"] == kept["db_password"] and again[VRRP_PASSWORD] == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # It fits the model as made: every character keepalived reads as one word.
    assert config_of("lb-1", password=first).password == first


@pytest.mark.parametrize(
    ("output", "interface"),
    [
        ("2: ens3    inet 10.20.0.5/24 brd 10.20.0.255 scope global ens3\\       valid_lft forever\n", "ens3"),
        ("3: eth0@if12    inet 10.20.0.5/24 scope global eth0\n", "eth0"),
        ("", ""),
    ],
)
def test_the_interface_fact_names_where_the_address_is(output: str, interface: str) -> None:
    assert interface_with("10.20.0.5").parse(output) == interface


def test_the_interface_fact_reads_this_machine() -> None:
    # The command as a node runs it, here: the loopback holds 127.0.0.1 on every Linux machine.
    fact = interface_with("127.0.0.1")
    done = subprocess.run(fact.command.split(), check=True, capture_output=True, text=True, timeout=30)
    assert fact.parse(done.stdout) == "lo"
