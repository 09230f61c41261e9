"""The one place templates are rendered: strict Jinja2 over files shipped in the firmware_template package."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import jinja2

TEMPLATE_ROOT = Path(str(resources.files("siq.firmware_template")))

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATE_ROOT)),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
    autoescape=False,
)


def render(template: str, **context) -> str:
    """Render firmware_template/<template> with a typed context; a missing variable is an error."""
    return _ENV.get_template(template).render(**context)


def template_path(relative: str) -> Path:
    """A non-template support file (startup code, linker script, plugin source) shipped with the package."""
    path = TEMPLATE_ROOT / relative
    if not path.exists():
        raise FileNotFoundError(f"siq installation is missing {relative} in {TEMPLATE_ROOT}")
    return path
