"""Names the swarm lists one a line (services, stacks, secrets, configs, and those still in use),
and the service table `fab status` prints as Docker gives it."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.facts import Fact
from cluster.facts.text import parse_lines

# Labels on the Docker secrets swarmlab creates: which state directory (its credentials) made them.
STATE_LABEL = "swarmlab.state"
STATE_DIR_LABEL = "swarmlab.state.dir"

SERVICE_NAMES = Fact("docker service ls --format '{{.Name}}'", parse_lines)
STACK_NAMES = Fact("docker stack ls --format '{{.Name}}'", parse_lines)
SECRET_NAMES = Fact("docker secret ls --format '{{.Name}}'", parse_lines)
CONFIG_NAMES = Fact("docker config ls --format '{{.Name}}'", parse_lines)
# The secrets and configs some service still mounts (Docker refuses to remove those).
SECRETS_IN_USE = Fact(
    'ids=$(docker service ls -q); [ -z "$ids" ] || docker service inspect --format '
    "'{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{println .SecretName}}{{end}}' $ids",
    parse_lines,
)
CONFIGS_IN_USE = Fact(
    'ids=$(docker service ls -q); [ -z "$ids" ] || docker service inspect --format '
    "'{{range .Spec.TaskTemplate.ContainerSpec.Configs}}{{println .ConfigName}}{{end}}' $ids",
    parse_lines,
)


def parse_table(output: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(line.split("|")) for line in output.splitlines() if line.strip())


# NAME, MODE, REPLICAS, IMAGE of every service, as the CLI shows them.
SERVICE_TABLE = Fact("docker service ls --format '{{.Name}}|{{.Mode}}|{{.Replicas}}|{{.Image}}'", parse_table)


@dataclass(frozen=True)
class SecretOwner:
    """A secret a stack's services mount, and the state directory that created it (its labels; empty
    for a secret made before swarmlab labelled them)."""

    name: str
    state: str = ""  # the fingerprint of the creating state directory's credentials
    directory: str = ""  # that state directory's path on the machine that created it


def _parse_owners(output: str) -> tuple[SecretOwner, ...]:
    found = []
    for line in parse_lines(output):
        name, _, rest = line.partition("|")
        state, _, directory = rest.partition("|")
        found.append(SecretOwner(name, state, directory))
    return tuple(found)


def stack_secret_owners(stack: str) -> Fact[tuple[SecretOwner, ...]]:
    """The secrets the stack's services mount now, with the labels saying which state directory made them."""
    return Fact(
        f"ids=$(docker service ls -q --filter label=com.docker.stack.namespace={stack}); "
        '[ -z "$ids" ] || { names=$(docker service inspect --format '
        "'{{range .Spec.TaskTemplate.ContainerSpec.Secrets}}{{println .SecretName}}{{end}}' $ids | sort -u); "
        '[ -z "$names" ] || docker secret inspect --format '
        f'\'{{{{.Spec.Name}}}}|{{{{index .Spec.Labels "{STATE_LABEL}"}}}}|'
        f'{{{{index .Spec.Labels "{STATE_DIR_LABEL}"}}}}\' $names; }}',
        _parse_owners,
    )
