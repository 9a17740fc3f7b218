"""Alembic environment of the lineage database.

morphsearch runs migrations programmatically (:func:`morphsearch.lineage.schema.upgrade`)
on a connection it has already opened and locked, passed in
``config.attributes["connection"]``; the migrations then join its transaction.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from morphsearch.lineage.models import Base

config = context.config
connection = config.attributes.get("connection")

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
elif connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # plain `alembic -x ...` use with sqlalchemy.url set in a config file
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    with engine.begin() as own_connection:
        context.configure(
            connection=own_connection, target_metadata=Base.metadata, render_as_batch=True
        )
        with context.begin_transaction():
            context.run_migrations()
