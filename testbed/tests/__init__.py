"""Tests of the test bed itself: the registry and the MongoDB stand-in, without Docker."""
