"""Registration numbers and aliases: a per-organization counter, molecules.registration_number, molecule_aliases.

Revision ID: 0002

Molecules already in the database get numbers in created_at order (then id), per organization,
with the default prefix; each organization's counter then continues after its last number and is
locked (numbers were issued). Frozen explicit operations, like 0001.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"

DEFAULT_PREFIX = "MOL"  # services.molecule.domain.registration_numbers.DEFAULT_PREFIX when this was written


def upgrade() -> None:
    op.create_table(
        "registration_counters",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("prefix", sa.Text(), nullable=False),
        sa.Column("next_value", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column("locked", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.PrimaryKeyConstraint("organization_id"),
    )
    op.add_column("molecules", sa.Column("registration_number", sa.Text(), nullable=True))
    op.execute(
        sa.text(
            """
            WITH numbered AS (
                SELECT id, organization_id,
                       row_number() OVER (PARTITION BY organization_id ORDER BY created_at, id) AS value
                FROM molecules
            ), counters AS (
                INSERT INTO registration_counters (organization_id, prefix, next_value, locked)
                SELECT organization_id, :prefix, max(value) + 1, true FROM numbered GROUP BY organization_id
                RETURNING organization_id, prefix
            )
            UPDATE molecules m
            SET registration_number = c.prefix || '-'
                || CASE WHEN n.value < 1000000 THEN lpad(n.value::text, 6, '0') ELSE n.value::text END
            FROM numbered n JOIN counters c ON c.organization_id = n.organization_id
            WHERE m.id = n.id
            """
        ).bindparams(prefix=DEFAULT_PREFIX)
    )
    op.alter_column("molecules", "registration_number", nullable=False)
    op.create_unique_constraint(
        "molecules_registration_number", "molecules", ["organization_id", "registration_number"]
    )
    op.create_table(
        "molecule_aliases",
        sa.Column("organization_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.Column("molecule_id", sa.UUID(as_uuid=False), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["molecule_id"], ["molecules.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("organization_id", "alias"),
    )
    op.create_index(op.f("ix_molecule_aliases_molecule_id"), "molecule_aliases", ["molecule_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_molecule_aliases_molecule_id"), table_name="molecule_aliases")
    op.drop_table("molecule_aliases")
    op.drop_constraint("molecules_registration_number", "molecules", type_="unique")
    op.drop_column("molecules", "registration_number")
    op.drop_table("registration_counters")
