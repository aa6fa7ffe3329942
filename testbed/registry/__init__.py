"""A minimal Docker Registry (HTTP API V2) STAND-IN for tests, and helpers to publish images
from the tier-3 harness into it and resolve tags to digests from a guest."""

from .server import Registry
from .storage import RegistryError

__all__ = ["Registry", "RegistryError"]
