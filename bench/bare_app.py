"""The ceiling for HTTP intake: a bare FastAPI POST that validates a small body and answers 202."""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Body(BaseModel):
    """Roughly the rider report's shape."""

    code: str
    category: str
    description: str = ""


@app.post("/api/v1/reports", status_code=202)
async def post(body: Body) -> dict[str, object]:
    """Accept and forget."""
    return {"report_id": "r", "case_id": None, "status": "received"}
