#!/bin/sh
# The seed document's first request, with curl.
URL=${CODEEXEC_URL:-http://127.0.0.1:8080/v1}
curl -sS "$URL/chat/completions" \
  -H "Authorization: Bearer ${CODEEXEC_API_KEY:-none}" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "'"${MODEL:-grok-4}"'",
    "messages": [{"role": "user", "content": "Calculate the compound interest on $10,000 at 5% for 10 years"}],
    "tools": [{"type": "code_execution"}]
  }'
echo
