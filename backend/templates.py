"""Job templates: saved recipes that queue jobs with overrides (the `job_template` table).

    python -c "from backend import templates; help(templates)"
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import select

from backend.db import read_session, write_session
from backend.models import JobCreate, Template, TemplateCreate


class TemplateNotFound(LookupError):
    pass


class TemplateExists(ValueError):
    pass


def create_template(engine: Engine, spec: TemplateCreate) -> Template:
    with write_session(engine) as s:
        if s.exec(select(Template.id).where(Template.name == spec.name)).first() is not None:
            raise TemplateExists(f"a template named {spec.name!r} already exists")
        template = Template(name=spec.name, description=spec.description,
                            config=spec.config.model_dump(mode="json", exclude_unset=True),
                            launch=spec.launch.model_dump(mode="json", exclude_unset=True))
        s.add(template)
        s.flush()
        return template


def list_templates(engine: Engine, limit: int = 100, offset: int = 0) -> list[Template]:
    with read_session(engine) as s:
        return list(s.exec(select(Template).order_by(Template.id).offset(offset).limit(limit)).all())


def get_template(engine: Engine, template_id: int) -> Template:
    with read_session(engine) as s:
        template = s.get(Template, template_id)
        if template is None:
            raise TemplateNotFound(f"template {template_id} does not exist")
        return template


def job_spec(template: Template, config: dict[str, Any], launch: dict[str, Any]) -> JobCreate:
    """The template with overrides on top, validated as a job (raises pydantic's ValidationError)."""
    return JobCreate.model_validate({"config": {**template.config, **config}, "launch": {**template.launch, **launch}})
