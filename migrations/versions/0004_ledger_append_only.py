"""The ledger is append-only in the database too: triggers refuse UPDATE and DELETE on
`transaction` (and TRUNCATE on PostgreSQL), whoever asks, as they do on `audit_log`.

No code path changes a ledger row once written: a correction is a new transfer. On PostgreSQL
the app's role already lacks UPDATE, DELETE and TRUNCATE on the table (`flask grant-app-role`);
these triggers fire for every role, the owner's included, and only the owner or a superuser can
drop or disable them. On SQLite they are the only guard, and anyone who can write the file can
drop them: they stop mistakes and the app's own code, not someone holding the file.
A later migration that recreates `transaction` (Alembic batch mode on SQLite) drops them and
must create them again, as for `audit_log` (DESIGN.md section 4).

Revision ID: 0004_ledger_append_only
Revises: 0003_account_history_index
Create Date: 2026-12-01 06:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0004_ledger_append_only'
down_revision = '0003_account_history_index'
branch_labels = None
depends_on = None


def upgrade():
    """Create the ledger's append-only triggers on SQLite or PostgreSQL."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f'CREATE TRIGGER transaction_no_{operation.lower()} BEFORE {operation} ON "transaction" '
                "BEGIN SELECT RAISE(ABORT, 'the ledger (transaction) is append-only'); END"
            )
    elif dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'the ledger (transaction) is append-only'; END $$"
        )
        op.execute(
            'CREATE TRIGGER transaction_no_update_delete BEFORE UPDATE OR DELETE ON "transaction" '
            "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
        )
        op.execute(
            'CREATE TRIGGER transaction_no_truncate BEFORE TRUNCATE ON "transaction" '
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
        )
    else:
        raise RuntimeError(f"no append-only triggers defined for {dialect}")


def downgrade():
    """Drop them again."""
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS transaction_no_update")
        op.execute("DROP TRIGGER IF EXISTS transaction_no_delete")
    elif dialect == "postgresql":
        op.execute('DROP TRIGGER IF EXISTS transaction_no_update_delete ON "transaction"')
        op.execute('DROP TRIGGER IF EXISTS transaction_no_truncate ON "transaction"')
        op.execute("DROP FUNCTION IF EXISTS ledger_refuse_change()")
