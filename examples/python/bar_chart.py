import base64

from common import MODEL, client, show

response = client.chat.completions.create(
    model=MODEL,
    messages=[{"role": "user", "content": "Make a bar chart of the popularity of five programming languages"}],
    tools=[{"type": "code_execution"}],
)
raw = show(response)
n = 0
for call in raw.get("tool_calls") or []:
    for display in (call.get("code_execution") or {}).get("displays") or []:
        if "image/png" in display:
            n += 1
            with open("chart-%d.png" % n, "wb") as f:
                f.write(base64.b64decode(display["image/png"]))
            print("saved chart-%d.png" % n)
