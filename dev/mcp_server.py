"""A streamable-HTTP MCP server written with the Python `mcp` package (not rmcp), for running
the Rust MCP client against an implementation from another project.

    pip install 'mcp==2.3.0'
    python3 dev/mcp_server.py [--port 0]

It binds 127.0.0.1 (port 0 = a free one), prints one line `listening http://127.0.0.1:PORT/mcp`
once the socket is bound, and serves until killed. Tools: `echo(text)` and `add(a, b)`.
"""

import argparse
import asyncio
import socket
import sys

import uvicorn
from mcp.server.mcpserver import MCPServer

server = MCPServer(name="kasal-python-mcp", version="1.0.0", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0 = free)")
    args = parser.parse_args()

    # Bind first, so the port printed is the one served (no race with another process).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(64)
    port = sock.getsockname()[1]

    app = server.streamable_http_app(host="127.0.0.1")
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    print(f"listening http://127.0.0.1:{port}/mcp", flush=True)
    await uvicorn.Server(config).serve(sockets=[sock])


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
