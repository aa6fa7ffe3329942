set -eu
if [ -n "$(docker ps -q --filter label=com.docker.compose.project=smart-smoker-dev --filter label=com.docker.compose.service=mongo)" ]; then echo "unchanged mongo (running)"; exit 0; fi
docker compose -p smart-smoker-dev -f /opt/smart-smoker-dev/bootstrap-compose.yaml up -d --wait mongo
echo "changed mongo (bootstrapped)"
