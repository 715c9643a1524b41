"""Wire protocols: JSON-RPC 2.0 (one core for HTTP and the WebSocket), the method tables,
the WebSocket session (sans I/O), edge and gateway, the HTTP listener and the ASGI app.

- :mod:`protocols.jsonrpc` — the envelope, method tables, dispatch and error codes;
- :mod:`protocols.methods` — the methods by domain (social, feeds, realtime, system);
- :mod:`protocols.cursors` — the one page-cursor codec;
- :mod:`protocols.websocket` — ``GET /ws``: session, wire structs, frames, edge, gateway;
- :mod:`protocols.http` — the listener that owns the port (HTTP to hypercorn, ``/ws`` to the edge);
- :mod:`protocols.app` — the ASGI app (``/rpc``, ``/health``, ``/metrics``, the pages).

Nothing is imported here, so that a client importing one pure codec (the close
codes, the wire structs) does not load the server side.
"""
