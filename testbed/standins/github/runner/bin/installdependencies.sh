#!/bin/bash
# STAND-IN for actions/runner's bin/installdependencies.sh (the real one apt-installs libicu and
# the other .NET dependencies): only leaves a mark that it ran, as root.
set -eu
[ "$(id -u)" = 0 ] || { echo "Need to run with sudo privilege" >&2; exit 1; }
date > /run/standin-installdependencies
