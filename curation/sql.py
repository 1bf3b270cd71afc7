"""Rows read in plain SQL, turned into model instances as the ORM would: for the few hot statements
(the rating path, the signed-in user) whose ORM compilation cost more than the database's answer."""

from __future__ import annotations

from django.db import connection


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
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        if cursor.description is not None:
            return cursor.fetchone()[0]
    return None
