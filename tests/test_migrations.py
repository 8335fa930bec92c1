"""The database the migrations build is the one the models describe (on SQLite and on PostgreSQL)."""
from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import models.tables  # noqa: F401  (registers every table with SQLModel.metadata)


def test_migrated_database_matches_the_models(engine: Any) -> None:
    # Column types are left out: SQLite reports its own spellings of them (and the models' custom types).
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), SQLModel.metadata)
    assert differences == [], "models and migrations differ; add a migration (models/migrations/versions) for each change"
