"""The stacks deploy-stack knows: their template, the images they need, and their HAProxy routes."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import ConfigError, ConfigErrors


@dataclass(frozen=True)
class Route:
    """An edge service: published in host mode on every worker, balanced by HAProxy."""

    name: str
    path_prefix: str  # "/" for the default route
    port: int
    health_path: str = "/healthz"


@dataclass(frozen=True)
class ImageRecipe:
    """An image built on the storage node from a Dockerfile in the repository."""

    name: str
    dockerfile: str  # path relative to the repository root
    context_dir: str  # directory whose files form the build context
    build_args: tuple[tuple[str, str], ...] = ()
    base: str | None = None  # another recipe this one builds FROM (its tag goes in as a build arg)


@dataclass(frozen=True)
class StackSpec:
    name: str
    template: str
    routes: tuple[Route, ...]
    images: tuple[ImageRecipe, ...]


HELLO = StackSpec(
    name="hello",
    template="stacks/hello.yaml.j2",
    routes=(Route("web", "/", 8000),),
    images=(ImageRecipe("hello", "services/hello/Dockerfile", "services/hello"),),
)

STACKS = {spec.name: spec for spec in (HELLO,)}


def stack_spec(name: str) -> StackSpec:
    if name not in STACKS:
        raise ConfigErrors([ConfigError("stack", name, "is not a known stack", f"use one of: {', '.join(STACKS)}")])
    return STACKS[name]
