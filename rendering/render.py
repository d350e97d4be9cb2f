"""Pure rendering: a template name and a frozen value in, text out. No I/O beyond reading templates.

Lives outside cluster/ so that infra/ (Pulumi) renders cloud-init with the same code without importing cluster/.
"""

from __future__ import annotations

import dataclasses
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from pydantic import BaseModel

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


@cache
def environment(*directories: Path) -> jinja2.Environment:
    """Templates from `directories` first (a workload bundle's own), then templates/."""
    # StrictUndefined: a missing value is a bug in our data, never an empty string in a config file.
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*directories, TEMPLATES_DIR]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def _fields(data: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    if isinstance(data, BaseModel):
        return dict(data)
    if isinstance(data, dict):
        return dict(data)
    raise TypeError(f"render() takes a dataclass, a pydantic model or a dict, not {type(data).__name__}")


def render(template: str, data: object) -> str:
    """Render templates/<template> with the fields of data as top-level names."""
    return environment().get_template(template).render(_fields(data))


def render_file(directory: Path, template: str, data: object) -> str:
    """Render <directory>/<template> (a workload bundle's template) the same way."""
    return environment(directory.resolve()).get_template(template).render(_fields(data))
