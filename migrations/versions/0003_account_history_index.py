"""One covering index for an account's entries, newest first, filters included.

The transactions list's filters (dates, type, amounts) used to be served by
`ix_transaction_account_id_timestamp`: every entry of the date range read from the table, then
sorted by id, to show 25 (for a customer with 5,000 entries, 6.9 ms on SQLite for the last 180
days). `ix_transaction_account_id_id_timestamp_type_amount` serves the list and its filters
alike: each account's entries walked newest first inside the index, the filters checked there,
stopping at the page's 26th match, never visiting the table (0.3 ms; 1 ms when nothing
matches and the walk covers the whole history). It replaces `ix_transaction_account_id_id`,
its prefix, and the timestamp index, so a transfer maintains one index instead of two.

Revision ID: 0003_account_history_index
Revises: 0002_multi_factor
Create Date: 2026-11-29 23:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0003_account_history_index'
down_revision = '0002_multi_factor'
branch_labels = None
depends_on = None

COVERING = 'ix_transaction_account_id_id_timestamp_type_amount'


def _build(create: list[tuple[str, list[str]]], drop: list[str]) -> None:
    """Create, then drop, indexes of `transaction`. On PostgreSQL each runs CONCURRENTLY, outside
    a transaction, so transfers go on while the ledger is indexed (a plain CREATE INDEX would
    hold off every write to it until the build ends); SQLite has one writer anyway. An
    interrupted run on PostgreSQL keeps the steps it finished, and an interrupted build leaves
    an INVALID index: drop it (DROP INDEX CONCURRENTLY) before running the migration again."""
    concurrently = op.get_bind().dialect.name == "postgresql"

    def run() -> None:
        for name, columns in create:
            op.create_index(name, 'transaction', columns, unique=False, postgresql_concurrently=concurrently)
        for name in drop:
            op.drop_index(name, table_name='transaction', postgresql_concurrently=concurrently)

    if concurrently:
        with op.get_context().autocommit_block():
            run()
    else:
        run()


def upgrade():
    _build(create=[(COVERING, ['account_id', 'id', 'timestamp', 'type', 'amount'])],
           drop=['ix_transaction_account_id_id', 'ix_transaction_account_id_timestamp'])


def downgrade():
    _build(create=[('ix_transaction_account_id_timestamp', ['account_id', 'timestamp']),
                   ('ix_transaction_account_id_id', ['account_id', 'id'])],
           drop=[COVERING])
