"""Single-statement inserts for the hot intake write path, with the ORM's field semantics.

Building and compiling one ORM query costs ~1 ms of CPU on the 2-core VM (mostly the SQL compiler);
the intake path used nine of them per ticket. Here every value still goes through the model field
(`pre_save` applies defaults and auto_now(_add), `get_db_prep_save` adapts JSON, datetimes, ...), so
rows are what `Model.objects.create` would write; only the SQL text is built once per column set and
reused, and PostgreSQL keeps each statement prepared on the connection.
"""

from collections.abc import Sequence
from functools import cache
from typing import Any

import psycopg
from django.db import connection
from django.db.models import Model

NEVER_AUTO_PREPARE = 2**31 - 1


def insert_values(obj: Model, *, skip: tuple[str, ...] = ()) -> tuple[tuple[str, ...], list[Any]]:
    """(quoted columns, adapted values) of the concrete fields of an unsaved `obj`.

    The primary key is included only when it was set. `skip` names attnames the caller supplies
    itself (e.g. a foreign key taken from another CTE).
    """
    columns: list[str] = []
    values: list[Any] = []
    for field in obj._meta.concrete_fields:
        if field.attname in skip or (field.primary_key and getattr(obj, field.attname) is None):
            continue
        value = field.pre_save(obj, add=True)
        columns.append(quote(field.column))
        values.append(field.get_db_prep_save(value, connection=connection))
    return tuple(columns), values


@cache
def quote(name: str) -> str:
    return connection.ops.quote_name(name)


@cache
def table(model: type[Model]) -> str:
    return quote(model._meta.db_table)


def mark_saved(obj: Model, pk: int) -> Model:
    """Make `obj` look like an instance the ORM has just inserted."""
    obj.pk = pk
    obj._state.adding = False
    obj._state.db = connection.alias
    return obj


def fetch_one(sql: str, params: Sequence[Any]) -> tuple | None:
    """Run one hot statement as a prepared statement on Django's connection; its first row.

    Django's cursors bind parameters on the client, which costs more CPU than the query itself for
    these wide inserts (every value is quoted into the SQL text, which the server parses again).
    A server-side-binding cursor on the same connection takes part in the current transaction;
    errors are wrapped into Django's exceptions as usual. Write the SQL with %s placeholders.
    """
    connection.ensure_connection()
    if connection.in_atomic_block:
        connection.validate_no_broken_transaction()
    raw = connection.connection
    if raw.prepare_threshold is None:
        # Django turns preparing off (threshold None, for the sake of external poolers); explicit
        # prepare=True needs it on. Django's own cursors bind on the client and never prepare, so a
        # threshold that is never reached keeps everything else as it was.
        raw.prepare_threshold = NEVER_AUTO_PREPARE
    with connection.wrap_database_errors, psycopg.Cursor(raw) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()
