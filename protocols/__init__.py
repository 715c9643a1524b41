"""Wire protocols: the JSON-RPC 2.0 codec, the API methods and the ASGI app."""

from protocols.api import Services
from protocols.app import AppConfig, create_app
from protocols.jsonrpc import Dispatcher, JsonRpcError

__all__ = ["AppConfig", "Dispatcher", "JsonRpcError", "Services", "create_app"]
