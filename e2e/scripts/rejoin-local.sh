#!/usr/bin/env bash
# understudy's rejoin hook for the local sandbox: turns a former primary (a data directory on this
# machine) into a streaming standby of the new primary. understudy runs it with
#   UNDERSTUDY_SITE, UNDERSTUDY_EPOCH, UNDERSTUDY_PRIMARY_HOST, UNDERSTUDY_PRIMARY_PORT,
#   UNDERSTUDY_PRIMARY_USER, UNDERSTUDY_PRIMARY_PASSWORD, UNDERSTUDY_REWIND (1: run pg_rewind first)
# Usage (in spec.sites[*].rejoin.command): rejoin-local.sh DATA_DIR LOG_FILE
set -euo pipefail
data=${1:?data directory}
log=${2:?log file}
bin=/usr/lib/postgresql/15/bin
as_pg() { setpriv --reuid postgres --regid postgres --init-groups -- "$@"; }

# Stop it cleanly (pg_rewind needs a clean shutdown; a crashed server gets one start/stop cycle).
if as_pg "$bin/pg_ctl" status -D "$data" >/dev/null 2>&1; then
  as_pg "$bin/pg_ctl" stop -D "$data" -m fast -w -t 60 >/dev/null
elif [ -f "$data/postmaster.pid" ]; then
  rm -f "$data/postmaster.pid"
fi

conninfo="host=$UNDERSTUDY_PRIMARY_HOST port=$UNDERSTUDY_PRIMARY_PORT user=$UNDERSTUDY_PRIMARY_USER password=$UNDERSTUDY_PRIMARY_PASSWORD dbname=postgres application_name=$UNDERSTUDY_SITE"
# pg_rewind and pg_basebackup copy the source's configuration files (its port, its socket
# directory): keep this site's own and put it back afterwards.
keep=$(mktemp -d)
trap 'rm -rf "$keep"' EXIT
cp -p "$data/postgresql.conf" "$keep/"

how=follow
if [ "${UNDERSTUDY_REWIND:-0}" = 1 ]; then
  if as_pg "$bin/pg_rewind" -D "$data" --source-server="$conninfo" --no-sync >"$data.rewind.log" 2>&1; then
    how="rewound ($(tail -1 "$data.rewind.log"))"
  elif grep -q 'shut down cleanly' "$data.rewind.log" \
      && { as_pg "$bin/postgres" --single -D "$data" postgres </dev/null >/dev/null 2>&1 || true; } \
      && as_pg "$bin/pg_rewind" -D "$data" --source-server="$conninfo" --no-sync >>"$data.rewind.log" 2>&1; then
    # A crashed target: crash recovery first (single-user mode), then rewind.
    how="rewound after crash recovery ($(tail -1 "$data.rewind.log"))"
  else
    # Rewind impossible (e.g. the WAL it needs is gone): re-clone from the new primary, keeping
    # this site's own configuration.
    echo "rejoin-local: pg_rewind failed ($(tail -1 "$data.rewind.log")); re-cloning" >&2
    rm -rf "$data"
    PGPASSWORD="$UNDERSTUDY_PRIMARY_PASSWORD" as_pg "$bin/pg_basebackup" -h "$UNDERSTUDY_PRIMARY_HOST" -p "$UNDERSTUDY_PRIMARY_PORT" \
      -U "$UNDERSTUDY_PRIMARY_USER" -D "$data" -X stream -c fast
    how=recloned
  fi
fi
cp -p "$keep/postgresql.conf" "$data/postgresql.conf"
# Follow the new primary: standby.signal plus primary_conninfo (the last setting in the file wins).
as_pg touch "$data/standby.signal"
grep -v '^primary_conninfo' "$data/postgresql.auto.conf" > "$data/postgresql.auto.conf.new" || true
printf "primary_conninfo = '%s'\n" "$conninfo" >> "$data/postgresql.auto.conf.new"
chown postgres:postgres "$data/postgresql.auto.conf.new"
mv "$data/postgresql.auto.conf.new" "$data/postgresql.auto.conf"
touch "$log" && chown postgres:postgres "$log"
as_pg "$bin/pg_ctl" start -D "$data" -l "$log" -w -t 60 >/dev/null
echo "rejoin-local: $UNDERSTUDY_SITE $how, follows $UNDERSTUDY_PRIMARY_HOST:$UNDERSTUDY_PRIMARY_PORT"
