set -eu
changed=''
getent group sshd-users >/dev/null || { groupadd --system sshd-users; changed="$changed group:sshd-users"; }
id -nG root | tr ' ' '\n' | grep -qx sshd-users || { usermod -aG sshd-users root; changed="$changed member:root"; }
[ "$(stat -c %a:%U:%G /var/log/smart-smoker 2>/dev/null)" = 750:root:root ] || { install -d -m 0750 -o root -g root /var/log/smart-smoker; changed="$changed dir:/var/log/smart-smoker"; }
[ "$(stat -c %a:%U:%G /etc/smart-smoker 2>/dev/null)" = 750:root:root ] || { install -d -m 0750 -o root -g root /etc/smart-smoker; changed="$changed dir:/etc/smart-smoker"; }
if [ -z "$changed" ]; then echo "unchanged users"; else echo "changed$changed"; fi
