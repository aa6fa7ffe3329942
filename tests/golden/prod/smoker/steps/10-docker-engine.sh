set -eu
want_engine=27.5.1
want_compose=2.32.4
have_engine=$(dockerd --version 2>/dev/null | sed -n 's/^Docker version \([^,]*\),.*/\1/p')
have_engine=${have_engine%%[+~-]*}
have_compose=$(docker compose version --short 2>/dev/null || true)
have_compose=${have_compose#v}
if [ "$have_engine" = "$want_engine" ] && [ "$have_compose" = "$want_compose" ]; then
  echo "unchanged docker $have_engine, compose $have_compose"; exit 0
fi
# shellcheck disable=SC1091 # the guest's own os-release
. /etc/os-release
install -d -m 0755 /etc/apt/keyrings
[ -s /etc/apt/keyrings/docker.asc ] || curl -fsSL --retry 3 "https://download.docker.com/linux/raspbian/gpg" -o /etc/apt/keyrings/docker.asc
echo "deb [arch=armhf signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/raspbian $VERSION_CODENAME stable" > /etc/apt/sources.list.d/docker.list
export DEBIAN_FRONTEND=noninteractive
if [ -d /run/systemd/system ]; then
  timeout 600 systemd-run --quiet --wait --collect --property=After=apt-daily.service --property=After=apt-daily-upgrade.service /bin/true || true
fi
apt-get -o DPkg::Lock::Timeout=600 update -q
engine=$(apt-cache madison docker-ce | awk -v v="$want_engine" '$3 ~ ("^5:" v "-") {print $3; exit}')
compose=$(apt-cache madison docker-compose-plugin | awk -v v="$want_compose" '$3 ~ ("^" v "-") {print $3; exit}')
[ -n "$engine" ] || { echo "docker-ce $want_engine is not in Docker's repository" >&2; exit 1; }
[ -n "$compose" ] || { echo "compose $want_compose is not in Docker's repository" >&2; exit 1; }
apt-mark unhold docker-ce docker-ce-cli docker-compose-plugin >/dev/null 2>&1 || true
apt-get -o DPkg::Lock::Timeout=600 install -y -q --allow-downgrades "docker-ce=$engine" "docker-ce-cli=$engine" containerd.io "docker-compose-plugin=$compose"
apt-mark hold docker-ce docker-ce-cli docker-compose-plugin >/dev/null
echo "changed docker $want_engine, compose $want_compose"
