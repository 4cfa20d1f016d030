"""hefl aggregation server: holds each job's model only as ciphertexts and applies updates."""

from fl_server.app import create_app
from fl_server.errors import ServerError
from fl_server.job_service import JobService
from fl_server.material import EpochContext, KeyauthMaterial, MaterialSource, TokenKey
from fl_server.registry import JobRegistry
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
    "EpochContext",
    "FileStore",
    "HingeStaleness",
    "JobRegistry",
    "JobService",
    "KeyauthMaterial",
    "MaterialSource",
    "MemoryStore",
    "PolynomialStaleness",
    "ServerError",
    "ServerService",
    "ServerSettings",
    "StalenessPolicy",
    "Store",
    "TokenKey",
    "create_app",
]
