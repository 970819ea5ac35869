"""drop the (instrument, scale) index of score

No query of the pipeline looks score rows up by instrument and scale: readers take the whole table (scores
frame, linkage's compact read, export), and the only user, the compact SQLite read's `SELECT DISTINCT
instrument, scale`, scans the table instead (factor 10: 0.29 s instead of 0.14 s). Building the index after
the bulk store cost 1.4 s of a 7 s store on SQLite and 2.6-4.7 s of a 12-15 s store on PostgreSQL (a sort of
text) at factor 10, about ten times that at factor 100. The score key (unique) stays. The downgrade creates
the index again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 08:20:00
"""
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_score_instrument_scale", table_name="score")


def downgrade() -> None:
    op.create_index("ix_score_instrument_scale", "score", ["instrument", "scale"], unique=False)
