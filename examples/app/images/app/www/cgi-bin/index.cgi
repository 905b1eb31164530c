#!/bin/sh
# GET / : the greetings, read from PostgreSQL. 503 when the database does not answer.
export PGCONNECT_TIMEOUT=3
if rows="$(psql -X -h "${DB_HOST:-db}" -U postgres -d app -At -c 'select message from greetings order by id' 2>&1)"; then
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n%s\n' "$rows"
else
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\napp: no rows from db: %s\n' "$rows"
fi
