"""Tables of the embedded FHIR store (SQLAlchemy Core; SQLite and PostgreSQL alike).

`resource` holds the current version of each resource with an integer surrogate key `rid`
(cursor paging and index joins use it); `resource_version` keeps every version for vread and
`_history`; the `idx_*` tables hold search values, written in the same transaction as the
resource. Dates are fixed-width UTC strings, so comparisons are plain string comparisons.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

STAMP_LEN = 26

resource = Table(
    "resource",
    metadata,
    Column("rid", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=True),
    Column("type", String(64), nullable=False),
    Column("id", String(64), nullable=False),
    Column("version_id", Integer, nullable=False),
    Column("last_updated", String(STAMP_LEN), nullable=False),
    Column("sort_date", String(STAMP_LEN), nullable=False, default=""),
    Column("deleted", Boolean, nullable=False, default=False),
    Column("body", LargeBinary, nullable=True),
    UniqueConstraint("type", "id", name="uq_resource_type_id"),
    Index("ix_resource_type_updated", "type", "last_updated", "rid"),
    Index("ix_resource_type_sort", "type", "sort_date", "rid"),
)

resource_version = Table(
    "resource_version",
    metadata,
    Column("type", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("version_id", Integer, primary_key=True),
    Column("last_updated", String(STAMP_LEN), nullable=False),
    Column("method", String(8), nullable=False),
    Column("body", LargeBinary, nullable=True),  # None for a deletion
)

idx_token = Table(
    "idx_token",
    metadata,
    Column("rid", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("system", String(255), nullable=True),
    Column("code", String(255), nullable=False),
    Index("ix_token_lookup", "rtype", "param", "code"),
    Index("ix_token_rid", "rid"),
)

idx_string = Table(
    "idx_string",
    metadata,
    Column("rid", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("value", String(255), nullable=False),  # normalized: case- and accent-folded
    Column("raw", String(255), nullable=False),  # as written, for :exact
    Index("ix_string_lookup", "rtype", "param", "value"),
    Index("ix_string_rid", "rid"),
)

idx_date = Table(
    "idx_date",
    metadata,
    Column("rid", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("low", String(STAMP_LEN), nullable=False),
    Column("high", String(STAMP_LEN), nullable=False),
    Index("ix_date_low", "rtype", "param", "low"),
    Index("ix_date_high", "rtype", "param", "high"),
    Index("ix_date_rid", "rid"),
)

idx_ref = Table(
    "idx_ref",
    metadata,
    Column("rid", BigInteger().with_variant(Integer, "sqlite"), nullable=False),
    Column("rtype", String(64), nullable=False),
    Column("param", String(64), nullable=False),
    Column("target_type", String(64), nullable=False),
    Column("target_id", String(64), nullable=False),
    Index("ix_ref_lookup", "rtype", "param", "target_id", "target_type"),
    Index("ix_ref_target", "target_type", "target_id"),
    Index("ix_ref_rid", "rid"),
)

INDEX_TABLES = (idx_token, idx_string, idx_date, idx_ref)

store_meta = Table(
    "store_meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", String(255), nullable=False),
)

# Bump when indexer.index() starts writing rows it did not write before; stores built by an
# older version are re-indexed once when opened.
INDEX_VERSION = 3  # 3: identifier on every type
