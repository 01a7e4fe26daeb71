"""JSON Schema export of the envelope and every event payload (`python -m schemas.export DIR`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from schemas.envelope import CloudEvent
from schemas.events import REGISTRY

SCHEMA_DIR = Path(__file__).parent / "jsonschema"


def all_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema, for the envelope and each event type's data."""
    out = {"cloudevent.json": CloudEvent.model_json_schema()}
    for name, (version, model) in sorted(REGISTRY.items()):
        schema = model.model_json_schema()
        schema["$id"] = f"gridloop.{name}.v{version}"
        out[f"gridloop.{name}.v{version}.json"] = schema
    return out


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema as a pretty JSON file; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for filename, schema in all_schemas().items():
        path = directory / filename
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
