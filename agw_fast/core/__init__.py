"""The sans-IO core: plans built at load, routing, rewrites and HTTP/1 wire code.

Nothing under `core` imports asyncio or socket: it takes bytes and frozen config and returns
bytes and plans, so every piece is unit-tested without a loop.
"""
