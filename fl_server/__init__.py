"""hefl aggregation server: holds the model only as ciphertexts and applies updates."""

from fl_server.app import create_app
from fl_server.errors import ServerError
from fl_server.material import KeyauthMaterial
from fl_server.service import ServerService
from fl_server.settings import ServerSettings
from fl_server.staleness import (
    ConstantStaleness,
    HingeStaleness,
    PolynomialStaleness,
    StalenessPolicy,
)
from fl_server.store import FileStore, MemoryStore, Store

__all__ = [
    "ConstantStaleness",
    "FileStore",
    "HingeStaleness",
    "KeyauthMaterial",
    "MemoryStore",
    "PolynomialStaleness",
    "ServerError",
    "ServerService",
    "ServerSettings",
    "StalenessPolicy",
    "Store",
    "create_app",
]
