set -eu
timers='smart-smoker-backup.timer smart-smoker-backup-validate.timer'
# shellcheck disable=SC2086 # two unit names
if systemctl is-enabled --quiet $timers && systemctl is-active --quiet $timers; then
  echo "unchanged timers"; exit 0
fi
# shellcheck disable=SC2086
systemctl enable --now $timers
echo "changed timers enabled"
