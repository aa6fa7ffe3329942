set -eu
ids() { docker compose -p smart-smoker-device -f /opt/smart-smoker-dev/compose.yaml ps -q  2>/dev/null | sort; }
before=$(ids)
docker compose -p smart-smoker-device -f /opt/smart-smoker-dev/compose.yaml up -d --wait --remove-orphans
if [ "$before" = "$(ids)" ]; then echo "unchanged containers"; else echo "changed containers"; fi
