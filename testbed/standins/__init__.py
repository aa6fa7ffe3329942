"""STAND-IN service images for the tier-3 tests (clearly named; none of them is the real thing).

No MongoDB server, and neither of the project's application images, can be fetched on the build
machines, so tier 3 runs these instead:

* ``smoker-test/mongo-standin:7.0`` for ``mongo:7.0``: a Python server speaking enough of the
  MongoDB wire protocol for pymongo 4.x (real SCRAM-SHA-1/256, users and roles, insert, find,
  delete, count; data in /data/db), plus ``mongod``/``mongosh``/``mongodump``/``mongorestore``
  with the real tools' command-line shapes (the dump archive format is the stand-in's own);
* ``smoker-test/backend-standin:<version>`` (optionally ``:<version>-broken``) and
  ``smoker-test/frontend-standin:<version>`` for the application images.

Public API::

    build_standins(engine, versions=("1.0.0",), broken_versions=()) -> StandinImages
    StandinImages.app_images(version, broken=False) -> {"mongo": ref, "backend": ref, ...}
    StandinImages.refs() -> list[str]
"""

from .images import (
    BACKEND_REPO,
    FRONTEND_REPO,
    MONGO_REPO,
    MONGO_TAG,
    PYMONGO_VERSION,
    StandinImages,
    build_standins,
)

__all__ = [
    "BACKEND_REPO",
    "FRONTEND_REPO",
    "MONGO_REPO",
    "MONGO_TAG",
    "PYMONGO_VERSION",
    "StandinImages",
    "build_standins",
]
