"""drop the unused household_id indexes of response and person

No query of the pipeline looks rows of `response` or `person` up by household (readers load them whole and
group in pandas; households are never deleted, so the foreign keys need no index on the child side). Each of
these B-trees of random 64-character pseudonyms costs the loader one more set of dirty index pages per file:
at factor 100 (5,800 rows per file) about a quarter of a second per file and index on SQLite. The lookups by
person (`ix_response_person_id`, `ix_response_subject_id`) stay. The downgrade creates both indexes again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 05:25:00
"""
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

INDEXES = [("response", "ix_response_household_id"), ("person", "ix_person_household_id")]


def upgrade() -> None:
    for table, name in INDEXES:
        op.drop_index(name, table_name=table)


def downgrade() -> None:
    for table, name in INDEXES:
        op.create_index(name, table, ["household_id"], unique=False)
