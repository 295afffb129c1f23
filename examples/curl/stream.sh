#!/bin/sh
# Streaming: each code execution arrives as a tool_calls delta, then the answer.
URL=${CODEEXEC_URL:-http://127.0.0.1:8080/v1}
curl -sSN "$URL/chat/completions" \
  -H "Authorization: Bearer ${CODEEXEC_API_KEY:-none}" \
  -H "Content-Type: application/json" \
  -d '{
    "model": "'"${MODEL:-grok-4}"'",
    "stream": true,
    "stream_options": {"include_usage": true},
    "messages": [{"role": "user", "content": "Calculate the first 20 Fibonacci numbers"}],
    "tools": [{"type": "code_execution"}]
  }'
