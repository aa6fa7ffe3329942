set -eu
ids() { docker compose -p smart-smoker-prod -f /opt/smart-smoker-prod/compose.yaml ps -q mongo 2>/dev/null | sort; }
before=$(ids)
docker compose -p smart-smoker-prod -f /opt/smart-smoker-prod/compose.yaml up -d --wait --remove-orphans mongo
if [ "$before" = "$(ids)" ]; then echo "unchanged containers"; else echo "changed containers"; fi
