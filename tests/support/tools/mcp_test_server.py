"""An MCP server for tests, written with the SDK: `python mcp_test_server.py`
(stdio) or `python mcp_test_server.py --http PORT` (streamable HTTP)."""

import os
import sys

from mcp.server.mcpserver import MCPServer

server = MCPServer("test-tools")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two whole numbers."""
    return str(a + b)


@server.tool()
def broken(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"broken on purpose: {reason}")


@server.tool()
def die() -> str:
    """Ends the server's process."""
    os._exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--http":
        server.run(transport="streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
