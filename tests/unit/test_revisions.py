"""Stack revisions with the fake runner: deploy-stack records each deploy (ok or failed) in the state
directory, without a secret's value; retention drops the oldest; rollback-stack picks the right revision
(default: the one before the current; --to N; an unknown N refused), refuses one whose versions are
gone, changes nothing in a dry run; prune keeps what a kept revision names; and a stack another state
directory deployed is refused before anything changes."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from cluster import flows
from cluster import revisions as stored
from cluster.config import parse_config
from cluster.credentials import NAME_KEY, fingerprint
from cluster.errors import ConfigErrors, SwarmlabError
from cluster.facts.listings import SecretOwner
from cluster.plans import revisions as plan
from cluster.plans.stack import StateIdentity, foreign_owner, plan_secrets, secret_name
from cluster.providers.static import StaticProvider
from cluster.revisions import Revision
from cluster.session import Session
from cluster.tasks.prune import prune_unused
from cluster.workload import SecretsSpec, load_workload
from tests.unit.fake_runner import FakeRunner, lab_shaped_inventory
from tests.unit.test_tasks import deployed_hello

# Commands that change the swarm or the registry: none may run when a rollback or deploy is refused.
CHANGING = r"stack deploy|secret (create|rm)|config (create|rm)|docker build|docker push|service update"
STACK_FILE = ("manager-1", "/root/.swarmlab/stacks/hello.yml")


def session(runner: FakeRunner, tmp_path: Path, dry_run: bool = False, keep: int = 20) -> Session:
    config = parse_config({"state_dir": str(tmp_path), "keep_revisions": keep})
    return Session(config, StaticProvider(), runner, dry_run)


def hello_runner(update_state: str = "") -> FakeRunner:
    runner = deployed_hello()
    runner.answer(r"docker stack services hello", f"hello_web|3/3\n---\nhello_web|{update_state}\n---\n")
    return runner


def hello_stack(cpus: str) -> str:
    return f"services:\n  web:\n    image: 10.20.0.12:5000/swarmlab/hello:abc\n    deploy:\n      cpus: '{cpus}'\n"


def revision(number: int, cpus: str, result: str = "ok", **more: object) -> Revision:
    fields: dict[str, object] = {
        "number": number,
        "stack": "hello",
        "time": f"2026-12-06 10:0{number}:00Z",
        "result": result,
        "environment": "lab",
        "values": {"cpus": cpus},
        "images": {"web": "10.20.0.12:5000/swarmlab/hello:abc"},
        "secrets": {},
        "configs": {},
        "rendered": hello_stack(cpus),
        **more,
    }
    return Revision.model_validate(fields)


def recorded(tmp_path: Path, *revisions: Revision) -> list[Revision]:
    """Revisions saved in the static target's state directory, as earlier deploys left them."""
    paths = session(FakeRunner(lab_shaped_inventory()), tmp_path).state
    for item in revisions:
        stored.save(paths, item)
    return stored.load(paths, "hello")


def kept(tmp_path: Path) -> list[Revision]:
    return stored.load(session(FakeRunner(lab_shaped_inventory()), tmp_path).state, "hello")


# --- recording ---------------------------------------------------------------------------------------


def test_a_deploy_records_its_revision_private_and_without_secret_values(tmp_path: Path) -> None:
    hello = load_workload("hello", "lab")
    # A generated secret, so that the revision has one to name (and must not hold its value).
    with_secret = type(hello)(
        hello.manifest.model_copy(update={"secrets": SecretsSpec(generated=("db_password",))}),
        hello.directory,
        hello.environment,
        {"greeting": "hi"},
    )
    runner = hello_runner()
    deploying = session(runner, tmp_path)
    flows.run(flows.DEPLOY_STACK, deploying, with_secret)
    [first] = kept(tmp_path)
    assert (first.number, first.result, first.rollback_of, first.values) == (1, "ok", None, {"greeting": "hi"})
    assert first.rendered == runner.files[STACK_FILE].decode()
    assert list(first.images) == ["web"] and "/swarmlab/hello:" in first.images["web"]
    credentials = json.loads(deploying.state.credentials.read_text())
    assert first.secrets == {
        "db_password": secret_name("hello", "db_password", credentials["db_password"], credentials[NAME_KEY])
    }
    path = deploying.state.revisions / "hello" / "0001.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == stat.S_IMODE(deploying.state.revisions.stat().st_mode) == 0o700
    assert credentials["db_password"] not in path.read_text() and credentials[NAME_KEY] not in path.read_text()
    # The secret carries the state directory that made it (a fingerprint, never the key).
    [create] = runner.commands(r"docker secret create")
    assert f"--label swarmlab.state={fingerprint(credentials[NAME_KEY])} " in create
    assert f"swarmlab.state.dir={deploying.state.root}" in create


def test_a_failed_deploy_is_recorded_as_failed_and_an_unchanged_one_not_at_all(tmp_path: Path) -> None:
    with pytest.raises(SwarmlabError, match="rolled it back"):
        flows.run(
            flows.DEPLOY_STACK, session(hello_runner("rollback_completed"), tmp_path), load_workload("hello", "lab")
        )
    [failed] = kept(tmp_path)
    assert failed.result == "failed" and "rolled it back" in failed.error
    flows.run(flows.DEPLOY_STACK, session(hello_runner(), tmp_path), load_workload("hello", "lab"))
    flows.run(flows.DEPLOY_STACK, session(hello_runner(), tmp_path), load_workload("hello", "lab"))
    assert [(r.number, r.result) for r in kept(tmp_path)] == [(1, "failed"), (2, "ok")]


def test_retention_keeps_the_newest_and_numbers_keep_growing(tmp_path: Path) -> None:
    recorded(tmp_path, *(revision(n, f"0.{n}") for n in (1, 2, 3)))
    runner = hello_runner()
    flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path, keep=2), load_workload("hello", "lab"), rollback_to=1)
    assert [(r.number, r.rollback_of) for r in kept(tmp_path)] == [(3, None), (4, 1)]
    assert plan.to_prune(kept(tmp_path), 5) == [] and plan.next_number(kept(tmp_path)) == 5


@pytest.mark.parametrize("keep", [0, 1, 201])
def test_keep_revisions_is_checked_like_every_key(keep: int) -> None:
    with pytest.raises(ConfigErrors, match=r"keep_revisions=\d+: must be 2-200.*Fix: set keep_revisions to 20"):
        parse_config({"keep_revisions": keep})


# --- rollback-stack -------------------------------------------------------------------------------


def test_rollback_deploys_the_revision_before_the_current_and_records_it(tmp_path: Path) -> None:
    recorded(tmp_path, revision(1, "0.25"), revision(2, "0.5"), revision(3, "0.75", result="failed"))
    runner = hello_runner()
    flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    # Revision 3 failed: the one before the current that deployed ok is 2.
    assert runner.files[STACK_FILE].decode() == hello_stack("0.5")
    assert runner.commands(r"docker stack deploy --prune -c /root/.swarmlab/stacks/hello.yml hello")
    newest = kept(tmp_path)[-1]
    assert (newest.number, newest.rollback_of, newest.result, newest.rendered) == (4, 2, "ok", hello_stack("0.5"))
    assert not runner.commands(r"docker build")  # a rollback builds nothing: its images are in the registry
    # A second rollback goes back again (to 1: 3 failed, 2 is what runs now).
    again = hello_runner()
    flows.run(flows.ROLLBACK_STACK, session(again, tmp_path), load_workload("hello", "lab"))
    assert again.files[STACK_FILE].decode() == hello_stack("0.25") and kept(tmp_path)[-1].rollback_of == 1


def test_rollback_to_a_chosen_revision(tmp_path: Path) -> None:
    recorded(tmp_path, revision(1, "0.25"), revision(2, "0.5"), revision(3, "0.75"))
    runner = hello_runner()
    flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path), load_workload("hello", "lab"), rollback_to=1)
    assert runner.files[STACK_FILE].decode() == hello_stack("0.25") and kept(tmp_path)[-1].rollback_of == 1


@pytest.mark.parametrize(
    ("to", "problem"),
    [
        (7, r"stack hello has no revision 7 \(recorded: 1, 2, 3; older ones were pruned"),
        (3, r"revision 3 of stack hello failed to deploy \(boom\)"),
    ],
)
def test_rollback_to_an_unknown_or_failed_revision_is_refused_and_changes_nothing(
    tmp_path: Path, to: int, problem: str
) -> None:
    recorded(tmp_path, revision(1, "0.25"), revision(2, "0.5"), revision(3, "0.75", result="failed", error="boom"))
    runner = hello_runner()
    with pytest.raises(plan.RevisionError, match=problem):
        flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path), load_workload("hello", "lab"), rollback_to=to)
    assert not runner.commands(CHANGING) and not runner.files and len(kept(tmp_path)) == 3


def test_nothing_to_roll_back_to_says_why(tmp_path: Path) -> None:
    with pytest.raises(plan.RevisionError, match="no recorded revision"):
        plan.choose([], None, "hello")
    with pytest.raises(plan.RevisionError, match=r"no revision before 1 that deployed ok"):
        plan.choose([revision(1, "0.25")], None, "hello")


def test_rollback_dry_run_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded(tmp_path, revision(1, "0.25"), revision(2, "0.5"))
    runner = hello_runner()
    runner.answer(r"cat /root/.swarmlab/stacks/hello.yml", hello_stack("0.5"))
    dry = flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path, dry_run=True), load_workload("hello", "lab"))
    assert not runner.commands(CHANGING) and not runner.files and len(kept(tmp_path)) == 2
    out = capsys.readouterr().out
    assert "would record revision 3 of stack hello (rollback of 1)" in out
    assert "-      cpus: '0.5'\n+      cpus: '0.25'" in out  # the diff against what is deployed
    assert dry.timings.would_change and not dry.timings.changed


def test_a_revision_whose_versions_are_gone_is_refused_naming_them(tmp_path: Path) -> None:
    gone = {"db_password": "hello_db_password_0123456789ab"}
    recorded(tmp_path, revision(1, "0.25", secrets=gone, configs={"app": "hello_app_abcdefabcdef"}), revision(2, "0.5"))
    runner = hello_runner()
    runner.answer(r"docker config ls", "hello_app_abcdefabcdef\n")
    with pytest.raises(plan.RevisionError, match=r"no longer has: secret hello_db_password_0123456789ab\. Nothing"):
        flows.run(flows.ROLLBACK_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    assert not runner.commands(CHANGING) and not runner.files


def test_prune_keeps_the_versions_a_kept_revision_names(tmp_path: Path) -> None:
    recorded(tmp_path, revision(1, "0.25", secrets={"db_password": "hello_db_password_aaaaaaaaaaaa"}))
    runner = FakeRunner(lab_shaped_inventory())
    old = "hello_db_password_aaaaaaaaaaaa\nhello_db_password_bbbbbbbbbbbb\nhello_db_password_cccccccccccc\n"
    runner.answer(r"docker secret ls", old)
    current = {"db_password": "hello_db_password_cccccccccccc"}
    prune_unused(
        session(runner, tmp_path), load_workload("hello", "lab"), lab_shaped_inventory().managers[0], current, []
    )
    assert runner.commands(r"secret rm") == ["docker secret rm hello_db_password_bbbbbbbbbbbb"]


# --- history ----------------------------------------------------------------------------------------


def test_history_lists_each_revision_with_what_changed(tmp_path: Path) -> None:
    revisions = recorded(
        tmp_path,
        revision(1, "0.25"),
        revision(2, "0.5", secrets={"db_password": "hello_db_password_bbbbbbbbbbbb"}),
        revision(3, "0.25", rollback_of=1),
    )
    text = plan.history(revisions, "hello", 20)
    lines = text.splitlines()
    assert lines[0] == "# stack hello: 3 revision(s) kept (keep_revisions: 20)"
    assert re.match(r"\s+1  2026-12-06 10:01:00Z  ok      first recorded$", lines[1])
    assert lines[2] == "      images: hello:abc"
    assert "values: cpus 0.25->0.5; secrets changed: db_password; spec changed: web" in lines[3]
    assert "rollback of 1; values: cpus 0.5->0.25" in lines[5]
    assert plan.history(revisions[1:], "hello", 20).splitlines()[1].endswith("earliest kept")


# --- a stack deployed from another state directory ------------------------------------------------


def test_a_stack_deployed_from_another_state_directory_is_refused_before_anything_changes(tmp_path: Path) -> None:
    runner = hello_runner()
    runner.answer(
        r"com.docker.stack.namespace=hello\); ",
        "hello_db_password_0123456789ab|9f2c41d07be35a18|/home/op/.local/state/swarmlab/lab/demo\n",
    )
    with pytest.raises(SwarmlabError) as refused:
        flows.run(flows.DEPLOY_STACK, session(runner, tmp_path), load_workload("hello", "lab"))
    message = str(refused.value)
    assert "stack hello was deployed from another state directory" in message
    assert "/home/op/.local/state/swarmlab/lab/demo (credentials 9f2c41d07be35a18)" in message
    assert f"{tmp_path}/static/demo (credentials not made yet)" in message and "Nothing was changed" in message
    assert not runner.commands(CHANGING) and not runner.files and not kept(tmp_path)


def test_unlabelled_secrets_are_judged_by_the_generated_names() -> None:
    ours = StateIdentity("1111111111111111", "/state/static/demo")
    theirs = [SecretOwner("hello_db_password_0123456789ab")]
    assert foreign_owner("hello", ours, theirs, {"db_password": "hello_db_password_0123456789ab"}) is None
    problem = foreign_owner("hello", ours, theirs, {"db_password": "hello_db_password_ffffffffffff"})
    assert problem is not None and "generated secrets (db_password) are not the ones" in problem
    assert foreign_owner("hello", ours, [SecretOwner("hello_db_password_0123456789ab", ours.fingerprint)], {}) is None
    assert foreign_owner("hello", ours, [], {"db_password": None}) is None  # a first deploy


def test_secrets_are_created_with_the_labels_of_their_state_directory() -> None:
    owner = StateIdentity("1111111111111111", "/home/op/state dir/lab/demo")
    [create] = plan_secrets("manager-1", {"db_password": "hello_db_password_0"}, set(), owner).operations
    assert getattr(create, "command", "") == (
        "docker secret create --label swarmlab.state=1111111111111111 "
        "--label 'swarmlab.state.dir=/home/op/state dir/lab/demo' hello_db_password_0 - >/dev/null"
    )
