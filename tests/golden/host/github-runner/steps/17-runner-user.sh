set -eu
changed=''
id -u runner >/dev/null 2>&1 || { useradd --system --create-home --home-dir /home/runner --shell /bin/bash runner; changed="$changed user:runner"; }
for group in docker sudo; do
  if id -nG runner | tr ' ' '\n' | grep -qx "$group"; then
    gpasswd -d runner "$group" >/dev/null; changed="$changed -group:$group"
  fi
done
[ "$(stat -c %a:%U:%G /opt/actions-runner 2>/dev/null)" = 750:runner:runner ] || { install -d -m 0750 -o runner -g runner /opt/actions-runner; changed="$changed dir:/opt/actions-runner"; }
[ "$(stat -c %a:%U:%G /opt/hostedtoolcache 2>/dev/null)" = 755:runner:runner ] || { install -d -m 0755 -o runner -g runner /opt/hostedtoolcache; changed="$changed dir:/opt/hostedtoolcache"; }
if [ -z "$changed" ]; then echo "unchanged runner user"; else echo "changed runner user:$changed"; fi
