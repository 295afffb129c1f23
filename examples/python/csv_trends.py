from common import MODEL, client, show

data = """month,sales,customers
2024-01,12000,340
2024-02,13500,362
2024-03,12800,351
2024-04,15200,398
2024-05,16100,420
2024-06,17400,446"""

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Analyze this CSV data and find trends:\n" + data}],
    tools=[{"type": "code_execution"}],
)
show(response)
