#!/bin/sh
# The sandbox directly: no model involved.
URL=${CODEEXEC_URL:-http://127.0.0.1:8080/v1}
curl -sS "$URL/execute" \
  -H "Authorization: Bearer ${CODEEXEC_API_KEY:-none}" \
  -H "Content-Type: application/json" \
  -d '{"code": "p, r, n = 10_000, 0.05, 10\nprint(round(p * (1 + r) ** n, 2))"}'
echo
