"""Rows read in plain SQL, turned into model instances as the ORM would: for the few hot statements
(the rating path, the signed-in user) whose ORM compilation cost more than the database's answer.

On PostgreSQL these statements are prepared: bound server-side and parsed once per connection.
Django's own cursors bind on the client, which gives every execution a new text that cannot be
prepared. PostgreSQL still plans the queue's main SELECTs (open generations, candidates, claims) on
every execution (about 0.5 ms each at 10^6 samples): it judges their generic plans worse than the
plans for the actual values. Forcing generic plans was measured: the candidates' plan, not knowing
its LIMIT, walked the whole queue (480 ms instead of 2 ms), and with the LIMIT written into the text
the rater's votes were read through the wrong index (every vote of the rater, not the open ones),
so `plan_cache_mode` is left at its default. Forcing generic plans for the whole connection (with the
LIMIT written out and the votes' rater index dropped) was measured again at 10^6 samples: open
generations 0.7 ms instead of 1.3, claims 0.4 instead of 0.9, but a generic plan is fixed at a
connection's first execution, and where the statistics then knew only two raters (500,000 votes each)
the rater's votes looked too many to hash and the candidates took 450 ms a request."""

from __future__ import annotations

import contextlib
import functools

from django.db import connection


@functools.cache
def _prepared_cursor_class():
    from django.db.backends.postgresql.base import ServerBindingCursor

    class PreparedCursor(ServerBindingCursor):
        """Binds server-side and prepares every statement it runs (psycopg keeps the last hundred per
        connection, and deallocates the older). With `logged`, it keeps the statement's text where
        Django's query log reads it (psycopg leaves none for a prepared statement)."""

        logged = False

        def execute(self, query, params=None, *, prepare=None, binary=None):
            super().execute(query, params, prepare=True, binary=binary)
            if self.logged and self._query is None:
                self._query = self._convert_query(query, params)
            return self

    return PreparedCursor


@contextlib.contextmanager
def cursor():
    """A cursor for the hot statements: prepared on PostgreSQL, Django's own elsewhere. It goes through
    Django's cursor wrapper alike (query logging, CaptureQueriesContext, execute wrappers)."""
    if connection.vendor != "postgresql":
        with connection.cursor() as plain:
            yield plain
        return
    connection.ensure_connection()
    raw = _prepared_cursor_class()(connection.connection)
    raw.logged = connection.queries_logged
    # Django's own wrapping of a new cursor (thread check, query logging), around this one.
    with connection._prepare_cursor(raw) as prepared:
        yield prepared


def converted(field, value):
    """A column's value as the ORM would give it (SQLite returns datetimes as text, for one)."""
    column = field.get_col(field.model._meta.db_table)
    for converter in connection.ops.get_db_converters(column) + column.get_db_converters(connection):
        value = converter(value, column, connection)
    return value


def columns(model, alias: str) -> str:
    """Every concrete column of `model`, in field order, qualified by the table alias."""
    quote = connection.ops.quote_name
    return ", ".join(f"{alias}.{quote(f.column)}" for f in model._meta.concrete_fields)


def from_row(model, values):
    """An instance of `model` from a row of `columns(model, ...)`, converted and marked as loaded."""
    fields = model._meta.concrete_fields
    return model.from_db(connection.alias, [f.attname for f in fields],
                         [converted(f, v) for f, v in zip(fields, values)])


def loaded(instance):
    """An instance built by hand from a few columns read in SQL: marked as loaded, not new."""
    instance._state.adding, instance._state.db = False, connection.alias
    return instance


def execute(statement: str, params: list):
    """Run one statement; the first column of its first row where it returns one (RETURNING)."""
    with cursor() as hot:
        hot.execute(statement, params)
        if hot.description is not None:
            return hot.fetchone()[0]
    return None


def commit_without_flush() -> None:
    """Let the current transaction's commit return before its write-ahead log reaches the disk
    (PostgreSQL's `synchronous_commit` off, for this transaction alone): for writes a crash may lose
    without harm, such as the queue's claims, which are leases. Nothing durable can depend on such a
    write without it: a later synchronous commit (a vote) flushes the log up to itself, every earlier
    commit included. Measured on this project's 2-core machines: a flushed commit waits 0.2 ms for an
    idle disk and about 4 ms for a busy one, as long as the rest of the queue's selection at 10^6
    samples. The caller's own transaction only: inside someone else's it would change their commit
    too, so it is left alone there."""
    if connection.vendor == "postgresql" and len(connection.atomic_blocks) == 1:
        with connection.cursor() as plain:
            plain.execute("SET LOCAL synchronous_commit TO OFF")
