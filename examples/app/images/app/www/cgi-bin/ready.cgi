#!/bin/sh
# GET /cgi-bin/ready.cgi : app's readiness (its healthcheck). 200 only when app can make its page:
# PostgreSQL answers and the migration made the table. So `app` is Ready, for berth's rollout
# gate and for `web`'s dependsOn, only when it can serve rows, not merely when httpd runs.
export PGCONNECT_TIMEOUT=1
if out="$(psql -X -h "${DB_HOST:-db}" -U postgres -d app -At -c 'select 1 from greetings limit 1' 2>&1)"; then
    printf 'HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nready\n'
else
    printf 'HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n\r\napp: not ready: %s\n' "$out"
fi
