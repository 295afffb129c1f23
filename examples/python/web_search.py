from common import MODEL, client, show

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Search for the population of the five largest EU countries and compute their total"}],
    tools=[{"type": "web_search"}, {"type": "code_execution"}],
)
show(response)
