"""The six downloadable Excel task templates of the spec (§3), over HTTP."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field

from api.errors import ApiError, documented
from api.reports import XLSX
from tasks.intake.task_templates import BY_FILE, TASK_TEMPLATES, workbook_bytes

router = APIRouter(prefix="/task-templates", tags=["task templates"])


class TaskTemplate(BaseModel):
    title: str = Field(examples=["SMS messages"])
    purpose: str = Field(examples=["One SMS per row: a phone and a text."])
    file: str = Field(examples=["sms.xlsx"])
    url: str = Field(examples=["/v1/task-templates/sms.xlsx"])
    columns: list[str] = Field(examples=[["phone", "text"]])


@router.get("", response_model=list[TaskTemplate], summary="List the Excel task templates")
def task_templates() -> list[TaskTemplate]:
    """The downloadable Excel task templates, with where to get each."""
    return [TaskTemplate(title=t.title, purpose=t.purpose, file=t.file, url=f"/v1/task-templates/{t.file}", columns=list(t.columns))
            for t in TASK_TEMPLATES]


@router.get("/{file}", response_class=Response, summary="Download an Excel task template",
            responses={200: {"content": {XLSX: {}}, "description": "The template workbook."}, **documented(404)})
def task_template(file: str) -> Response:
    """One Excel task template: its columns, an example row, and a sheet describing each column."""
    template = BY_FILE.get(file)
    if template is None:
        raise ApiError(404, "not_found", f"no task template {file!r}; GET /v1/task-templates lists them")
    return Response(workbook_bytes(template), media_type=XLSX, headers={"Content-Disposition": f'attachment; filename="{file}"'})
