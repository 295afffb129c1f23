from common import MODEL, client, show

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Calculate the compound interest on $10,000 at 5% for 10 years"}],
    tools=[{"type": "code_execution"}],
)
show(response)
