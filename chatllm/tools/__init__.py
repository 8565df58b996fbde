"""Tools a model may call: declarations, running them, MCP servers, the call format."""
