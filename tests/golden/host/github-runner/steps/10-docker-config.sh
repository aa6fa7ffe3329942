set -eu
changed=0
if [ "$(sha256sum /usr/local/bin/crun 2>/dev/null | cut -d" " -f1)" != 322c6c94b33a749ccd9f6f5ad48b0dd976eef559bbcfe15afd507a289dcdbe91 ]; then
  download=$(mktemp)
  curl -fsSL --retry 3 -o "$download" https://github.com/containers/crun/releases/download/1.21/crun-1.21-linux-amd64 || { rm -f "$download"; exit 1; }
  got=$(sha256sum "$download" | cut -d" " -f1)
  if [ "$got" != 322c6c94b33a749ccd9f6f5ad48b0dd976eef559bbcfe15afd507a289dcdbe91 ]; then
    rm -f "$download"
    echo "crun checksum mismatch: got $got, want 322c6c94b33a749ccd9f6f5ad48b0dd976eef559bbcfe15afd507a289dcdbe91; nothing was installed" >&2
    exit 1
  fi
  install -m 0755 -o root -g root "$download" /usr/local/bin/crun
  rm -f "$download"
  changed=1; echo "changed /usr/local/bin/crun 1.21"
fi
/usr/local/bin/crun --version >/dev/null
install -d -m 0755 /etc/docker
new=$(mktemp /etc/docker/.daemon.json.XXXXXX)
trap 'rm -f "$new"' EXIT
cat > "$new"
python3 -m json.tool "$new" >/dev/null
if cmp -s "$new" /etc/docker/daemon.json; then
  echo "unchanged /etc/docker/daemon.json"
else
  install -m 0644 "$new" /etc/docker/daemon.json
  changed=1; echo "changed /etc/docker/daemon.json"
fi
if [ "$changed" = 1 ]; then
  systemctl restart docker
else
  systemctl is-active --quiet docker || systemctl enable --now docker
fi
docker info --format '{{.DefaultRuntime}}' | grep -qx crun
