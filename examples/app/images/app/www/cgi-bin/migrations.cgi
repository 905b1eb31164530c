#!/bin/sh
# GET /cgi-bin/migrations.cgi : how many times the migration task ran.
export PGCONNECT_TIMEOUT=3
if n="$(psql -X -h "${DB_HOST:-db}" -U postgres -d app -At -c 'select count(*) from migration_runs' 2>&1)"; then
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n%s\n' "$n"
else
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\napp: %s\n' "$n"
fi
