set -eu
/usr/local/lib/smoker-runner/ensure-registered
changed=''
for unit in smoker-github-runner.service smoker-runner-registration.timer; do
  systemctl is-enabled --quiet "$unit" || { systemctl enable --quiet "$unit"; changed="$changed enabled:$unit"; }
  systemctl is-active --quiet "$unit" || { systemctl start "$unit"; changed="$changed started:$unit"; }
done
if [ -z "$changed" ]; then echo "unchanged runner services"; else echo "changed runner services:$changed"; fi
