set -eu
arch=$(docker run --rm --platform linux/arm/v7 --entrypoint uname benjr70/smart-smoker-device-service:nightly -m)
[ "$arch" = armv7l ] || { echo "arm/v7 emulation is broken: uname -m says $arch" >&2; exit 1; }
echo "unchanged arm/v7 emulation ($arch)"
