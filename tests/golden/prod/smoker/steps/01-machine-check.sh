set -eu
dev=/dev/ttyS0
have=$(dpkg --print-architecture)
if [ "$have" != armhf ]; then
  echo "guests.smoker.arch = armhf, but the machine is $have. Fix: set guests.smoker.arch to the machine's" >&2; exit 1
fi
if [ ! -e "$dev" ]; then
  echo "guests.smoker.device.serialDevice = $dev does not exist. Fix: enable the UART (enable_uart=1 in /boot/firmware/config.txt) and reboot; on a test machine, point serialDevice at a stand-in node (docs/application.md)" >&2
  exit 1
fi
if [ ! -c "$dev" ]; then
  echo "guests.smoker.device.serialDevice = $dev is not a character device. Fix: enable the UART (enable_uart=1 in /boot/firmware/config.txt) and reboot; on a test machine, point serialDevice at a stand-in node (docs/application.md)" >&2
  exit 1
fi
echo "unchanged machine: $have, serial device $dev"
