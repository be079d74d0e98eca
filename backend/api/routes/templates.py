"""Templates: saved job recipes, queued with overrides.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response
from pydantic import ValidationError

from backend import templates
from backend.api.confine import check_spec, queue_job
from backend.api.deps import EngineDep, Offset, Problem, SettingsDep, TemplateId, reply, validation_problem
from backend.models import (
    JobCreate,
    JobPublic,
    TemplateCreate,
    TemplatePublic,
    TemplateQueue,
)

router = APIRouter()


@router.post("/templates", status_code=201, response_model=TemplatePublic, tags=["templates"])
def create_template(spec: TemplateCreate, engine: EngineDep, settings: SettingsDep) -> Response:
    """Save a job recipe under a unique name."""
    check_spec(JobCreate(config=spec.config, launch=spec.launch), settings)
    try:
        template = templates.create_template(engine, spec)
    except templates.TemplateExists as e:
        raise Problem(409, str(e), [{"field": "name", "message": str(e)}]) from None
    return reply(template, TemplatePublic, 201, {"Location": f"/templates/{template.id}"})


@router.get("/templates", response_model=list[TemplatePublic], tags=["templates"])
def list_templates(engine: EngineDep, limit: Annotated[int, Query(ge=1, le=500)] = 100, offset: Offset = 0) -> Response:
    return reply(templates.list_templates(engine, limit, offset), list[TemplatePublic])


@router.post("/templates/{template_id}/queue", status_code=202, response_model=JobPublic, tags=["templates"])
def queue_template(template_id: TemplateId, engine: EngineDep, settings: SettingsDep,
                   overrides: Annotated[TemplateQueue | None, Body()] = None) -> Response:
    """Queue a job from a template, with config/launch overrides merged on top."""
    try:
        template = templates.get_template(engine, template_id)
    except templates.TemplateNotFound as e:
        raise Problem(404, str(e), [{"field": "template_id", "message": "no such template"}]) from None
    overrides = overrides or TemplateQueue()
    try:
        spec = templates.job_spec(template, overrides.config, overrides.launch)
    except ValidationError as e:
        raise validation_problem(e) from None
    return queue_job(engine, settings, spec, {"source": "template", "template_id": template_id})


