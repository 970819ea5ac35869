"""item_block without foreign keys; drop response's batch_id index (the batch/row key covers it)

`item_block` rows are written only by the loader, in the same transaction as the response they belong to
(one block per response and instrument; quarantine release goes through the same code), and no row of
`response` or `item_layout` is ever deleted. The two foreign keys therefore never caught anything, but on
PostgreSQL each is a row-level trigger that looks the parent up and locks it (`FOR KEY SHARE`): at factor 10
they cost about 3 of the server's 17 CPU seconds of an ingestion (benchmarks/RESULTS.md, section ingest7). After a
load, tests/test_warehouse_migration_0005.py checks what they protected (every block has its response and its
layout). `ix_response_batch_id` is redundant: the unique (batch_id, row_number) key starts with batch_id and
serves every look-up by batch. Response's foreign keys to batch, household and person stay.

SQLite cannot drop a constraint: there `item_block` is rebuilt (same columns, WITHOUT ROWID) and its rows
copied. The downgrade restores the foreign keys and the index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 13:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

FOREIGN_KEYS = [("fk_item_block_layout_id_item_layout", "item_layout", "layout_id"),
                ("fk_item_block_response_id_response", "response", "response_id")]


def _columns() -> list[sa.Column]:
    return [sa.Column('response_id', sa.Integer(), nullable=False),
            sa.Column('instrument', sa.String(length=50), nullable=False),
            sa.Column('layout_id', sa.Integer(), nullable=False),
            sa.Column('codes', sa.LargeBinary(), nullable=False),
            sa.Column('reasons', sa.Text(), nullable=True)]


def _rebuild_sqlite(with_keys: bool) -> None:
    """SQLite: item_block made again with or without its foreign keys, rows copied in key order."""
    keys = [sa.ForeignKeyConstraint([col], [f'{table}.id'], name=name)
            for name, table, col in FOREIGN_KEYS] if with_keys else []
    op.create_table('item_block_new', *_columns(), *keys,
                    sa.PrimaryKeyConstraint('response_id', 'instrument', name='pk_item_block_new'),
                    sqlite_with_rowid=False)
    op.execute("INSERT INTO item_block_new (response_id, instrument, layout_id, codes, reasons) "
               "SELECT response_id, instrument, layout_id, codes, reasons FROM item_block "
               "ORDER BY response_id, instrument")
    op.drop_table('item_block')
    op.rename_table('item_block_new', 'item_block')


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_keys=False)
    else:
        for name, _table, _col in FOREIGN_KEYS:
            op.drop_constraint(name, 'item_block', type_='foreignkey')
    op.drop_index('ix_response_batch_id', table_name='response')


def downgrade() -> None:
    op.create_index('ix_response_batch_id', 'response', ['batch_id'], unique=False)
    if op.get_bind().dialect.name == "sqlite":
        _rebuild_sqlite(with_keys=True)
    else:
        for name, table, col in FOREIGN_KEYS:
            op.create_foreign_key(name, 'item_block', table, [col], ['id'])
