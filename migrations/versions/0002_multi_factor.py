"""Multi-factor sign-in: the user's encrypted TOTP key, its enrolment time and the last accepted
time step (each code works once).

Three nullable columns added to `user`; audit_log is not touched, so its triggers stay.

Revision ID: 0002_multi_factor
Revises: 0001_initial
Create Date: 2026-11-29 11:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0002_multi_factor'
down_revision = '0001_initial'
branch_labels = None
depends_on = None


def upgrade():
    op.add_column('user', sa.Column('mfa_secret', sa.String(length=255), nullable=True))
    op.add_column('user', sa.Column('mfa_enrolled_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('user', sa.Column('mfa_last_step', sa.BigInteger(), nullable=True))


def downgrade():
    with op.batch_alter_table('user') as batch_op:
        batch_op.drop_column('mfa_last_step')
        batch_op.drop_column('mfa_enrolled_at')
        batch_op.drop_column('mfa_secret')
