from common import MODEL, client, show

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Calculate the first 20 Fibonacci numbers"}],
    tools=[{"type": "code_execution"}],
)
show(response)
