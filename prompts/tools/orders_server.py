"""A small example MCP server: order status for the support persona's demo shop.

    python orders_server.py                 # MCP over stdio (what `--mcp` and mcp_servers: start)
    python orders_server.py --http 8765     # streamable HTTP on 127.0.0.1:8765/mcp

It answers from orders.json beside it (or the file in $CHATLLM_DEMO_ORDERS):
replace that file, or this server, with your shop's own lookup. It uses the
official `mcp` SDK, which chatllm installs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

from mcp.server.mcpserver import MCPServer

ORDERS = Path(os.environ.get("CHATLLM_DEMO_ORDERS") or Path(__file__).with_name("orders.json"))

server = MCPServer("demo-orders")


@server.tool()
def order_status(order_id: str) -> str:
    """Look up one order by its number (such as MM-123456): its status, carrier, tracking number and dates."""
    orders = json.loads(ORDERS.read_text(encoding="utf-8"))
    key = re.sub(r"\s+", "", order_id).upper()
    order = orders.get(key)
    if order is None:
        return json.dumps({"order_id": key, "found": False, "note": "No order has this number."})
    return json.dumps({"order_id": key, "found": True, **order}, ensure_ascii=False)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on 127.0.0.1:PORT")
    options = parser.parse_args()
    if options.http:
        server.run(transport="streamable-http", host="127.0.0.1", port=options.http)
    else:
        server.run()
