"""What every command that reads or writes the database checks first."""

from __future__ import annotations

from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor


def require_migrated() -> None:
    """A clear error before any work where the database is not set up or not up to date (instead of a
    traceback ending in "no such table" halfway through)."""
    executor = MigrationExecutor(connections[DEFAULT_DB_ALIAS])
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if pending:
        raise CommandError(f"the database is not set up: {len(pending)} migration(s) not applied "
                           f"(the first: {pending[0][0].app_label}.{pending[0][0].name}). "
                           f"Run `python manage.py migrate` first.")
