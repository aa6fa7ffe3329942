"""Build context of the ``smoker-test/mongo-standin`` image (a STAND-IN for ``mongo:7.0``).

The Python package ``mongo_standin`` below is both what the image runs and what the host's unit
tests import (``testbed.standins.mongo.mongo_standin``); it only uses relative imports for that.
"""
