"""Tier-3 test harness: an isolated Docker engine, offline-built images and a
systemd "guest" container reached over real SSH (see tests/tier3/)."""

from .engine import Engine, HarnessError, cache_dir, running_engine
from .guest import Client, Guest, GuestCommandError
from .images import ImageSet, build_image, build_images
from .lifecycle import start_guest

__all__ = [
    "Client",
    "Engine",
    "Guest",
    "GuestCommandError",
    "HarnessError",
    "ImageSet",
    "build_image",
    "build_images",
    "cache_dir",
    "running_engine",
    "start_guest",
]
