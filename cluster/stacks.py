"""The stacks deploy-stack knows: their template, the images they need, and their HAProxy routes."""

from __future__ import annotations

from dataclasses import dataclass

from cluster.errors import ConfigError, ConfigErrors


@dataclass(frozen=True)
class Route:
    """An edge service: published in host mode on the workers, balanced by HAProxy."""

    name: str
    path_prefix: str  # "/" for the default route
    port: int  # the port published on every worker
    health_path: str = "/healthz"
    strip_prefix: bool = False  # the service knows nothing of the prefix (e.g. /mail/)
    lab_only: bool = False  # only where the values enable the mail sink


@dataclass(frozen=True)
class ImageRecipe:
    """An image built on the storage node from files of the repository.

    `sources` maps a repository path (a file or a directory) to its place in the build context, so
    an image's tag hashes exactly what goes into it and nothing else.
    """

    name: str
    dockerfile: str
    sources: tuple[tuple[str, str], ...]
    build_args: tuple[tuple[str, str], ...] = ()
    base: str | None = None  # another recipe this one builds FROM (passed as RUNTIME_IMAGE)
    wheelhouse: str | None = None  # requirements file whose wheels go into the context's wheelhouse/


@dataclass(frozen=True)
class StackSpec:
    name: str
    template: str
    routes: tuple[Route, ...]
    images: tuple[ImageRecipe, ...]
    values_dir: str | None = None  # values/<stack>/<environment>.yaml, like Helm's values files


HELLO = StackSpec(
    name="hello",
    template="stacks/hello.yaml.j2",
    routes=(Route("web", "/", 8000),),
    images=(ImageRecipe("hello", "services/hello/Dockerfile", (("services/hello", ""),)),),
)

APP_SERVICES = ("ui", "api", "otp", "student", "enroll", "email", "email_otp", "mailsink")


def _app(service: str) -> ImageRecipe:
    package = "services/registration"
    return ImageRecipe(
        name=service,
        dockerfile="services/images/app/Dockerfile",
        sources=(
            (f"{package}/__init__.py", "registration/__init__.py"),
            (f"{package}/common", "registration/common/"),
            (f"{package}/{service}", f"registration/{service}/"),
        ),
        build_args=(("SERVICE", service),),
        base="runtime",
    )


def _debian(name: str) -> ImageRecipe:
    return ImageRecipe(name, f"services/images/{name}/Dockerfile", ((f"services/images/{name}", ""),))


REGISTRATION = StackSpec(
    name="registration",
    template="stacks/registration.yaml.j2",
    routes=(
        Route("ui", "/", 8000),
        Route("api", "/api/", 8001),
        Route("mail", "/mail/", 8025, strip_prefix=True, lab_only=True),
    ),
    images=(
        ImageRecipe(
            "runtime",
            "services/images/runtime/Dockerfile",
            (("services/requirements.txt", "requirements.txt"),),
            wheelhouse="services/requirements.txt",
        ),
        *(_app(s) for s in APP_SERVICES),
        *(_debian(n) for n in ("redis", "rabbitmq", "postgres")),
    ),
    values_dir="values/registration",
)

STACKS = {spec.name: spec for spec in (HELLO, REGISTRATION)}


def stack_spec(name: str) -> StackSpec:
    if name not in STACKS:
        raise ConfigErrors([ConfigError("stack", name, "is not a known stack", f"use one of: {', '.join(STACKS)}")])
    return STACKS[name]
