"""The test bed: what the tests stand on, kept apart from the tests themselves.

- `testbed.harness`: an isolated Docker engine and systemd test guests (the tier-3 real host);
  `python -m testbed.harness up` starts one by hand.
- `testbed.registry`: a STAND-IN container registry (Registry API v2) on the harness bridge.
- `testbed.standins`: STAND-IN images of the application's services (MongoDB, backend,
  frontend), built from local sources; never the real ones.

Its own tests are in `testbed/tests`. It imports nothing of the program or of `tests`.
"""
