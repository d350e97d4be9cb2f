"""State directories: one per provider and cluster, private modes, atomic secret files, the move from
the layout before per-provider state, and lab-down touching only the lab's own."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from cluster.config import parse_config
from cluster.credentials import load_or_create
from cluster.errors import SwarmlabError
from cluster.state import cluster_dir, legacy_owner, write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_each_provider_has_its_own_directory_for_a_cluster_name(tmp_path: Path) -> None:
    config = parse_config({"state_dir": str(tmp_path), "cluster": "demo"})
    lab, pulumi, static = (config.state(provider=p) for p in ("lab", "pulumi", "static"))
    assert lab.root == tmp_path / "lab" / "demo"
    assert {lab.root, pulumi.root, static.root} == {tmp_path / p / "demo" for p in ("lab", "pulumi", "static")}
    assert config.state(provider="pulumi", cluster="prod").credentials == tmp_path / "pulumi" / "prod" / "credentials"
    assert lab.ca_cert == tmp_path / "lab" / "demo" / "tls" / "ca.crt"


@pytest.mark.parametrize("name", ["../etc", "a/b", "", "-x", "x" * 31])
def test_a_cluster_name_cannot_reach_another_path(tmp_path: Path, name: str) -> None:
    with pytest.raises(SwarmlabError, match="cannot name a state directory"):
        cluster_dir(tmp_path, "static", name)


def test_secret_files_are_600_in_700_directories_even_over_a_looser_file(tmp_path: Path) -> None:
    target = tmp_path / "state" / "lab" / "demo" / "credentials"
    target.parent.mkdir(parents=True)
    target.write_text("old")
    os.chmod(target, 0o644)
    os.chmod(target.parent, 0o755)
    write_private(target, b"new secret")
    assert target.read_bytes() == b"new secret"
    assert mode(target) == 0o600 and mode(target.parent) == 0o700
    assert sorted(p.name for p in target.parent.iterdir()) == ["credentials"], "no partial file is left"


def test_missing_parents_are_made_private_too(tmp_path: Path) -> None:
    write_private(tmp_path / "root" / "pulumi" / "prod" / "tls" / "ca.key", b"k")
    for directory in ("root", "root/pulumi", "root/pulumi/prod", "root/pulumi/prod/tls"):
        assert mode(tmp_path / directory) == 0o700, directory


def test_credentials_are_forced_back_to_600(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    first = load_or_create(path, ["db_password"])
    os.chmod(path, 0o644)
    assert load_or_create(path, ["db_password"]) == first
    assert mode(path) == 0o600


def legacy(root: Path, cluster: str, provider_field: str | None = None, credentials: bool = False) -> Path:
    directory = root / cluster
    directory.mkdir(parents=True)
    (directory / "id_ed25519").write_text("key")
    if provider_field:
        (directory / "inventory.json").write_text(json.dumps({"version": 1, "provider": provider_field}))
    if credentials:
        (directory / "credentials").write_text('{"db_password": "kept"}')
    return directory


def test_a_legacy_lab_directory_moves_under_lab(tmp_path: Path) -> None:
    legacy(tmp_path, "demo", "lab", credentials=True)
    paths = cluster_dir(tmp_path, "lab", "demo")
    assert paths.root == tmp_path / "lab" / "demo"
    assert json.loads(paths.credentials.read_text()) == {"db_password": "kept"}
    assert not (tmp_path / "demo").exists()
    assert mode(tmp_path / "lab") == 0o700


def test_a_cluster_named_like_a_provider_moves_into_its_own_child(tmp_path: Path) -> None:
    legacy(tmp_path, "lab", "lab")
    paths = cluster_dir(tmp_path, "lab", "lab")
    assert paths.private_key.read_text() == "key" and paths.root == tmp_path / "lab" / "lab"


def test_another_providers_legacy_directory_is_left_alone(tmp_path: Path) -> None:
    legacy(tmp_path, "demo", "lab")
    cluster_dir(tmp_path, "pulumi", "demo")
    assert (tmp_path / "demo" / "inventory.json").exists() and not (tmp_path / "pulumi" / "demo").exists()


def test_credentials_nobody_can_attribute_stop_a_cloud_target_with_the_move_to_make(tmp_path: Path) -> None:
    directory = legacy(tmp_path, "demo", credentials=True)
    assert legacy_owner(directory) is None
    with pytest.raises(SwarmlabError) as raised:
        cluster_dir(tmp_path, "pulumi", "demo")
    assert f"mv {directory} {tmp_path / 'pulumi' / 'demo'}" in str(raised.value)
    # The lab never claims them: lab-up goes on with its own, empty directory.
    assert cluster_dir(tmp_path, "lab", "demo").root == tmp_path / "lab" / "demo"
    assert (directory / "credentials").exists()


def test_keys_alone_are_a_downed_labs(tmp_path: Path) -> None:
    assert legacy_owner(legacy(tmp_path, "demo")) == "lab"
    assert legacy_owner(legacy(tmp_path, "prod", "openstack")) == "pulumi"
