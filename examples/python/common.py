"""Shared set-up for the examples: a client pointed at a local codeexec."""
import json
import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("CODEEXEC_URL", "http://127.0.0.1:8080/v1"),
    api_key=os.environ.get("CODEEXEC_API_KEY", "none"),
)
MODEL = os.environ.get("MODEL", "grok-4")


def show(response):
    """Prints the answer and every piece of code that ran, with its output."""
    message = response.choices[0].message
    raw = json.loads(response.model_dump_json())["choices"][0]["message"]
    for call in raw.get("tool_calls") or []:
        if call.get("type") == "code_execution":
            ce = call["code_execution"]
            print("--- code (%s) ---\n%s\n--- output ---\n%s" % (ce["status"], ce["code"], ce["output"]))
        elif call.get("type") == "web_search":
            print("--- web search: %s ---" % call["web_search"]["query"])
    print("--- answer ---")
    print(message.content)
    usage = raw.get("usage") or json.loads(response.model_dump_json()).get("usage")
    print("usage:", usage)
    return raw
