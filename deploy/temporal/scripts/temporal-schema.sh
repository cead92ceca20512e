#!/bin/sh
# One-shot job (temporalio/admin-tools image): create Temporal's two PostgreSQL
# databases if they are missing and bring both schemas to the version shipped in this
# admin-tools image. Safe to run again: an existing database is kept, and
# update-schema only applies the versions not applied yet.
#
# Reads temporal-sql-tool's own environment variables:
#   SQL_PLUGIN (postgres12), SQL_HOST, SQL_PORT, SQL_USER, SQL_PASSWORD
# and TEMPORAL_DB / TEMPORAL_VISIBILITY_DB for the database names.
set -eu

: "${SQL_HOST:?SQL_HOST is required}"
: "${SQL_USER:?SQL_USER is required}"
: "${SQL_PASSWORD:?SQL_PASSWORD is required}"
export SQL_PLUGIN="${SQL_PLUGIN:-postgres12}"
export SQL_PORT="${SQL_PORT:-5432}"

SCHEMA_DIR=/etc/temporal/schema/postgresql/v12

prepare() {
    database="$1"
    schema="$2"
    if temporal-sql-tool --database "$database" create-database; then
        echo "created database $database"
    else
        echo "database $database not created (it usually exists already); continuing"
    fi
    SQL_DATABASE="$database" temporal-sql-tool setup-schema -v 0.0
    SQL_DATABASE="$database" temporal-sql-tool update-schema -d "$SCHEMA_DIR/$schema/versioned"
    echo "schema of $database is up to date"
}

prepare "${TEMPORAL_DB:-temporal}" temporal
prepare "${TEMPORAL_VISIBILITY_DB:-temporal_visibility}" visibility
