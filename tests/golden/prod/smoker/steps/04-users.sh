set -eu
changed=''
getent group sshd-users >/dev/null || { groupadd --system sshd-users; changed="$changed group:sshd-users"; }
id -u smoker >/dev/null 2>&1 || { useradd --create-home --shell /bin/bash smoker; changed="$changed user:smoker"; }
id -nG root | tr ' ' '\n' | grep -qx sshd-users || { usermod -aG sshd-users root; changed="$changed member:root"; }
id -nG smoker | tr ' ' '\n' | grep -qx sshd-users || { usermod -aG sshd-users smoker; changed="$changed member:smoker"; }
[ "$(stat -c %a:%U:%G /opt/smart-smoker-prod 2>/dev/null)" = 750:root:smoker ] || { install -d -m 0750 -o root -g smoker /opt/smart-smoker-prod; changed="$changed dir:/opt/smart-smoker-prod"; }
[ "$(stat -c %a:%U:%G /opt/smart-smoker-prod/releases 2>/dev/null)" = 750:root:smoker ] || { install -d -m 0750 -o root -g smoker /opt/smart-smoker-prod/releases; changed="$changed dir:/opt/smart-smoker-prod/releases"; }
[ "$(stat -c %a:%U:%G /opt/smart-smoker-prod/backups 2>/dev/null)" = 700:root:root ] || { install -d -m 0700 -o root -g root /opt/smart-smoker-prod/backups; changed="$changed dir:/opt/smart-smoker-prod/backups"; }
[ "$(stat -c %a:%U:%G /opt/smart-smoker-prod/data 2>/dev/null)" = 750:root:smoker ] || { install -d -m 0750 -o root -g smoker /opt/smart-smoker-prod/data; changed="$changed dir:/opt/smart-smoker-prod/data"; }
[ "$(stat -c %a:%U:%G /opt/smart-smoker-prod/logs 2>/dev/null)" = 750:smoker:smoker ] || { install -d -m 0750 -o smoker -g smoker /opt/smart-smoker-prod/logs; changed="$changed dir:/opt/smart-smoker-prod/logs"; }
[ "$(stat -c %a:%U:%G /var/log/smart-smoker 2>/dev/null)" = 750:root:root ] || { install -d -m 0750 -o root -g root /var/log/smart-smoker; changed="$changed dir:/var/log/smart-smoker"; }
[ "$(stat -c %a:%U:%G /etc/smart-smoker 2>/dev/null)" = 750:root:root ] || { install -d -m 0750 -o root -g root /etc/smart-smoker; changed="$changed dir:/etc/smart-smoker"; }
if [ -z "$changed" ]; then echo "unchanged users"; else echo "changed$changed"; fi
