"""packed item storage: item_layout + item_block replace item_value

One `item_block` per (response, instrument): the raw codes as little-endian float64 bytes in the order of a
shared `item_layout` (NaN = missing), missing reasons as a JSON object (NULL when none). The upgrade converts
every `item_value` row (layouts: the instrument's item codes in sorted order, as the long table's primary
key held them) and drops `item_value`; the downgrade restores the long table from the blocks. Both run in
chunks of response ids, on SQLite and PostgreSQL.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 02:10:00
"""
import json

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

CHUNK_RESPONSES = 20_000

item_value = sa.table('item_value', sa.column('response_id', sa.Integer), sa.column('instrument', sa.String),
                      sa.column('item', sa.String), sa.column('value', sa.Float),
                      sa.column('missing_reason', sa.String))
item_layout = sa.table('item_layout', sa.column('id', sa.Integer), sa.column('instrument', sa.String),
                       sa.column('items', sa.Text))
item_block = sa.table('item_block', sa.column('response_id', sa.Integer), sa.column('instrument', sa.String),
                      sa.column('layout_id', sa.Integer), sa.column('codes', sa.LargeBinary),
                      sa.column('reasons', sa.Text))


def _id_ranges(conn, table: str):  # noqa: ANN001, ANN202
    lo, hi = conn.execute(sa.text(f"SELECT min(response_id), max(response_id) FROM {table}")).first()
    if lo is None:
        return
    for start in range(int(lo), int(hi) + 1, CHUNK_RESPONSES):
        yield start, start + CHUNK_RESPONSES


def _create_packed() -> None:
    op.create_table('item_layout',
                    sa.Column('id', sa.Integer(), nullable=False),
                    sa.Column('instrument', sa.String(length=50), nullable=False),
                    sa.Column('items', sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint('id', name=op.f('pk_item_layout')))
    with op.batch_alter_table('item_layout', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_item_layout_instrument'), ['instrument'], unique=False)
    op.create_table('item_block',
                    sa.Column('response_id', sa.Integer(), nullable=False),
                    sa.Column('instrument', sa.String(length=50), nullable=False),
                    sa.Column('layout_id', sa.Integer(), nullable=False),
                    sa.Column('codes', sa.LargeBinary(), nullable=False),
                    sa.Column('reasons', sa.Text(), nullable=True),
                    sa.ForeignKeyConstraint(['layout_id'], ['item_layout.id'],
                                            name=op.f('fk_item_block_layout_id_item_layout')),
                    sa.ForeignKeyConstraint(['response_id'], ['response.id'],
                                            name=op.f('fk_item_block_response_id_response')),
                    sa.PrimaryKeyConstraint('response_id', 'instrument', name=op.f('pk_item_block')),
                    sqlite_with_rowid=False)


def _create_long() -> None:
    op.create_table('item_value',
                    sa.Column('response_id', sa.Integer(), nullable=False),
                    sa.Column('instrument', sa.String(length=50), nullable=False),
                    sa.Column('item', sa.String(length=50), nullable=False),
                    sa.Column('value', sa.Float(), nullable=True),
                    sa.Column('missing_reason', sa.String(length=50), nullable=True),
                    sa.ForeignKeyConstraint(['response_id'], ['response.id'],
                                            name=op.f('fk_item_value_response_id_response')),
                    sa.PrimaryKeyConstraint('response_id', 'instrument', 'item', name=op.f('pk_item_value')),
                    sqlite_with_rowid=False)


def upgrade() -> None:
    _create_packed()
    conn = op.get_bind()
    layouts: dict[tuple[str, tuple[str, ...]], int] = {}
    q = sa.text("SELECT response_id, instrument, item, value, missing_reason FROM item_value "
                "WHERE response_id >= :lo AND response_id < :hi ORDER BY response_id, instrument, item")
    for lo, hi in _id_ranges(conn, 'item_value'):
        groups: dict[tuple[int, str], list] = {}
        for rid, inst, item, value, reason in conn.execute(q, {"lo": lo, "hi": hi}):
            groups.setdefault((rid, inst), []).append((item, value, reason))
        rows = []
        for (rid, inst), answers in groups.items():
            key = (inst, tuple(a[0] for a in answers))
            if key not in layouts:
                text = json.dumps(list(key[1]), ensure_ascii=False, separators=(",", ":"))
                layouts[key] = conn.execute(item_layout.insert().values(instrument=inst, items=text)
                                            .returning(item_layout.c.id)).scalar_one()
            codes = np.array([np.nan if a[1] is None or a[2] is not None else float(a[1]) for a in answers],
                             dtype="<f8")
            reasons = {a[0]: a[2] for a in answers if a[2] is not None}
            rows.append({"response_id": rid, "instrument": inst, "layout_id": layouts[key],
                         "codes": codes.tobytes(),
                         "reasons": json.dumps(reasons, ensure_ascii=False, separators=(",", ":")) if reasons
                         else None})
        if rows:
            conn.execute(item_block.insert(), rows)
    op.drop_table('item_value')


def downgrade() -> None:
    _create_long()
    conn = op.get_bind()
    layouts = {r.id: (r.instrument, json.loads(r.items))
               for r in conn.execute(sa.select(item_layout.c.id, item_layout.c.instrument, item_layout.c["items"]))}
    q = sa.text("SELECT response_id, instrument, layout_id, codes, reasons FROM item_block "
                "WHERE response_id >= :lo AND response_id < :hi ORDER BY response_id, instrument")
    for lo, hi in _id_ranges(conn, 'item_block'):
        rows = []
        for rid, inst, lid, codes, reasons in conn.execute(q, {"lo": lo, "hi": hi}):
            items = layouts[lid][1]
            values = np.frombuffer(bytes(codes), dtype="<f8").tolist()
            why = json.loads(reasons) if reasons else {}
            for item, v in sorted(zip(items, values, strict=True)):
                rows.append({"response_id": rid, "instrument": inst, "item": item,
                             "value": None if v != v else v, "missing_reason": why.get(item)})
        if rows:
            conn.execute(item_value.insert(), rows)
    op.drop_table('item_block')
    with op.batch_alter_table('item_layout', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_item_layout_instrument'))
    op.drop_table('item_layout')
