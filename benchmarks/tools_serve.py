#!/usr/bin/env python3
"""The support persona's order lookup through `chatllm serve`, as a client of
the official `openai` SDK makes it: two turns (issue 23's end-to-end check).

    python benchmarks/tools_serve.py [--model PATH] [--threads N] [--question TEXT]

Turn 1 sends the question with an `order_status` tool and `tool_choice`
"auto": the model decides to call (the persona starts a reply to a question
naming an order with a call, on a model able to make one). The client looks
the order up in prompts/tools/orders.json, as a shop's backend would, and
turn 2 sends the result; the persona answers from it. Prints both turns and
checks that the call named the order and the answer states the returned
status and carrier. Run it alone (it loads the model in a server process).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from harness import Sandbox  # noqa: E402
from serve_load import Server, chatllm_argv, free_port  # noqa: E402

ORDERS = json.loads((HERE.parent / "prompts" / "tools" / "orders.json").read_text(encoding="utf-8"))
# The benchmark set's own order tool (benchmarks/data/tools/tools.json).
ORDER_TOOL = next(
    tool
    for tool in json.loads((HERE / "data" / "tools" / "tools.json").read_text(encoding="utf-8"))
    if tool["function"]["name"] == "order_status"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="a GGUF (default: the embedded model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--question", default="Where is my order NB-51377?")
    args = parser.parse_args()
    from openai import OpenAI

    from chatllm.engine.llama import weight_repacking_enabled

    argv = [*chatllm_argv(), "serve", "--port", str(port := free_port())]
    if args.model is not None:
        argv += ["-m", str(args.model)]
    with (
        tempfile.TemporaryDirectory() as root,
        Server(argv, port, env=Sandbox(Path(root), args.threads, weight_repacking_enabled()).env()) as server,
    ):
        client = OpenAI(base_url=f"{server.base}/v1", api_key="none", max_retries=0, timeout=600)
        question = [{"role": "user", "content": args.question}]
        began = time.perf_counter()
        first = client.chat.completions.create(model="support", messages=question, tools=[ORDER_TOOL], max_tokens=120)
        choice = first.choices[0]
        calls = choice.message.tool_calls or []
        print(f"turn 1 ({time.perf_counter() - began:.1f} s): finish_reason={choice.finish_reason}")
        for call in calls:
            print(f"  -> {call.function.name}({call.function.arguments})")
        if choice.message.content:
            print(f"  text: {choice.message.content!r}")
        if not calls:
            print("FAIL  the model did not call the tool")
            return 1
        call = calls[0]
        order_id = json.loads(call.function.arguments).get("order_id", "")
        result = json.dumps({"order_id": order_id, **ORDERS.get(order_id, {"status": "not found"})})
        print(f"  <- {result}")
        began = time.perf_counter()
        second = client.chat.completions.create(
            model="support",
            messages=[
                *question,
                choice.message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": result},
            ],
            tools=[ORDER_TOOL],
            max_tokens=160,
        )
        answer = second.choices[0].message.content or ""
        print(f"turn 2 ({time.perf_counter() - began:.1f} s): finish_reason={second.choices[0].finish_reason}")
        print(f"  {answer}")
    expected = ORDERS.get(order_id, {})
    checks = [
        ("the call names the order", order_id == "NB-51377" or args.question.find(order_id) >= 0),
        ("the answer states the returned status", expected.get("status", "?").lower() in answer.lower()),
        ("the answer names the carrier", str(expected.get("carrier", "?")).lower() in answer.lower()),
    ]
    for what, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {what}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
