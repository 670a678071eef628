#!/usr/bin/env bash
# Install afn-agent on Raspberry Pi OS / Debian from this checkout. Idempotent: run it again to upgrade.
#   sudo ./deploy/install.sh            # agent service
#   sudo ./deploy/install.sh --fleet    # also the fleet dashboard service
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX=/opt/afn-agent
ETC=/etc/afn-agent
DATA=/var/lib/afn-agent
USER_NAME=afn-agent
FLEET=0
[ "${1:-}" = "--fleet" ] && FLEET=1

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (sudo)" >&2
    exit 1
fi

echo "== system packages"
export DEBIAN_FRONTEND=noninteractive
need=""
# gcc and python3-dev build the analyzer's compiled part (afn_agent/gcode/_core.c) at install time
for pkg in python3 python3-venv python3-pip python3-dev gcc ca-certificates; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need="$need $pkg"
done
if [ -n "$need" ]; then
    apt-get update -qq
    apt-get install -y -qq $need >/dev/null
fi

echo "== service user $USER_NAME"
for group in dialout input gpio; do
    getent group "$group" >/dev/null || groupadd --system "$group"
done
if ! id "$USER_NAME" >/dev/null 2>&1; then
    useradd --system --home-dir "$DATA" --no-create-home --shell /usr/sbin/nologin "$USER_NAME"
fi
usermod -a -G dialout,input,gpio "$USER_NAME"

echo "== program in $PREFIX"
install -d -m 0755 "$PREFIX"
rm -rf "$PREFIX/src.new"
mkdir -p "$PREFIX/src.new"
tar -C "$SRC" --exclude=.git --exclude=.venv --exclude='*.egg-info' --exclude=__pycache__ \
    --exclude=tests/artifacts -cf - . | tar -C "$PREFIX/src.new" -xf -
rm -rf "$PREFIX/src"
mv "$PREFIX/src.new" "$PREFIX/src"
[ -x "$PREFIX/venv/bin/python" ] || python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
"$PREFIX/venv/bin/python" -m pip install -q "$PREFIX/src"

echo "== configuration in $ETC, data in $DATA"
install -d -m 0750 -o root -g "$USER_NAME" "$ETC"
if [ ! -e "$ETC/agent.toml" ]; then
    install -m 0640 -o root -g "$USER_NAME" "$SRC/deploy/agent.example.toml" "$ETC/agent.toml"
    echo "   wrote $ETC/agent.toml from the example: edit it, then: afn-agent check-config $ETC/agent.toml"
fi
install -m 0644 "$SRC/deploy/agent.schema.json" "$SRC/deploy/fleet.schema.json" "$ETC/"  # editors check the TOML
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$DATA"
ln -sf "$PREFIX/venv/bin/afn-agent" /usr/local/bin/afn-agent

echo "== udev rules and systemd units"
if [ ! -e /etc/udev/rules.d/99-afn-agent.rules ]; then
    install -D -m 0644 "$SRC/deploy/udev/99-afn-agent.rules" /etc/udev/rules.d/99-afn-agent.rules
fi
install -D -m 0644 "$SRC/deploy/systemd/afn-agent.service" /etc/systemd/system/afn-agent.service
[ "$FLEET" -eq 1 ] && install -D -m 0644 "$SRC/deploy/systemd/afn-fleet.service" /etc/systemd/system/afn-fleet.service
for unit in afn-ledger-backup.service afn-ledger-backup.timer; do
    install -D -m 0644 "$SRC/deploy/systemd/$unit" "/etc/systemd/system/$unit"
done
install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" /var/backups/afn-agent
if [ -d /run/systemd/system ]; then
    udevadm control --reload 2>/dev/null && udevadm trigger 2>/dev/null || true
    systemctl daemon-reload
    systemctl enable afn-agent.service >/dev/null
    systemctl enable afn-ledger-backup.timer >/dev/null   # a copy of the ledger every night
    [ "$FLEET" -eq 1 ] && systemctl enable afn-fleet.service >/dev/null
    echo "   enabled; start with: systemctl start afn-agent (after editing $ETC/agent.toml)"
else
    echo "   systemd is not running here (a chroot or container): units installed, not enabled"
fi
"$PREFIX/venv/bin/afn-agent" profiles >/dev/null
echo "afn-agent installed: $("$PREFIX/venv/bin/python" -c 'import afn_agent; print(afn_agent.__version__)')"
