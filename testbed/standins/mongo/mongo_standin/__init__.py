"""STAND-IN for MongoDB 7.0 (smoker-infra tier-3 tests only; this is NOT MongoDB).

A small asyncio server that speaks enough of the MongoDB wire protocol (OP_MSG, legacy OP_QUERY
handshake) for pymongo 4.x: SCRAM-SHA-1/256 authentication against stored SCRAM credentials, user
management, role-based confinement, insert/find (with cursors)/delete/count (no updates, no
indexes: nothing here uses them), and JSON persistence under the dbpath.
Plus the CLIs the project uses, with the real tools' shapes: ``mongod``, ``mongosh`` (two
expressions), ``mongodump`` and ``mongorestore`` (the archive format is the stand-in's own: see
``archive.py``).
"""

#: What ``db.version()`` / ``buildInfo`` report (the MongoDB release this stands in for).
VERSION = "7.0.14"
#: What ``mongod --version`` prints after ``db version v``: never mistaken for the real thing.
STANDIN_VERSION = f"{VERSION}-standin"
#: Version string of the stand-in database tools (mongodump/mongorestore).
TOOLS_VERSION = "100.9.4-standin"
#: Wire version of MongoDB 7.0.
MAX_WIRE_VERSION = 21
DEFAULT_PORT = 27017
DEFAULT_DBPATH = "/data/db"
