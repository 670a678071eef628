#!/usr/bin/env bash
# Set up the lab's Mosquitto (Debian 12 / Raspberry Pi OS Bookworm, `apt install mosquitto`) for afn-agent:
# the drop-in, the ACL, a lab CA with a broker certificate and one client certificate per user, and the
# password file with a generated password per user. Idempotent: run it again to add users; what exists
# (the CA, a user's password, an edited ACL) is kept.
#
#   sudo ./deploy/mosquitto/setup-broker.sh --host broker.fablab.lan \
#        --user pi-printers --user pi-shop --user booking --user fleet --user homeassistant
#
# Then: sudo systemctl restart mosquitto. The passwords are in /etc/mosquitto/afn-passwords.txt (root
# only); each agent needs its own and /etc/mosquitto/certs/afn-ca.crt (copy it to /etc/afn-agent/ca.crt).
# AFN_ROOT=<dir> puts every file under <dir> instead of / (the tests run the guide's commands so).
set -euo pipefail
SRC="$(cd "$(dirname "$0")" && pwd)"
ROOT="${AFN_ROOT:-}"
ETC="$ROOT/etc/mosquitto"
CERTS="$ETC/certs"
DAYS=3650
hosts=()
users=()

usage() {
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-0}"
}

while [ $# -gt 0 ]; do
    case "$1" in
        --host) hosts+=("${2:?--host needs a name or an address}"); shift 2 ;;
        --user) users+=("${2:?--user needs a name}"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "setup-broker.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$ROOT" ] && [ "$(id -u)" -ne 0 ]; then
    echo "setup-broker.sh: run as root (sudo)" >&2
    exit 1
fi
if [ ! -d "$ETC/conf.d" ]; then
    echo "setup-broker.sh: $ETC/conf.d is missing: install Mosquitto first (sudo apt install mosquitto)" >&2
    exit 1
fi
for user in "${users[@]}"; do
    if ! [[ "$user" =~ ^[A-Za-z0-9_.-]{1,64}$ ]]; then
        echo "setup-broker.sh: user name '$user': letters, digits, '.', '_' and '-' only" >&2
        exit 2
    fi
done
for tool in openssl mosquitto_passwd; do
    command -v "$tool" >/dev/null || { echo "setup-broker.sh: $tool is missing (apt install mosquitto openssl)" >&2; exit 1; }
done
# the broker reads its files as the mosquitto user (after dropping root): give them to its group
group=root
getent group mosquitto >/dev/null 2>&1 && group=mosquitto
private() { chown "root:$group" "$@" 2>/dev/null || true; chmod 640 "$@"; }

echo "== drop-in $ETC/conf.d/afn.conf"
sed "s#/etc/mosquitto#$ETC#g" "$SRC/mosquitto.conf" > "$ETC/conf.d/afn.conf"
if [ -f "$ETC/afn.acl" ]; then
    echo "== ACL $ETC/afn.acl kept (yours to edit: one block per agent)"
else
    cp "$SRC/afn.acl" "$ETC/afn.acl"
    echo "== ACL $ETC/afn.acl from the example lab: edit it to your site, agents and machines"
fi
private "$ETC/afn.acl"

echo "== certificates in $CERTS"
mkdir -p "$CERTS/clients"
if [ ! -f "$CERTS/afn-ca.key" ]; then
    openssl req -x509 -newkey rsa:3072 -nodes -days "$DAYS" -subj "/CN=afn-agent lab CA" \
        -keyout "$CERTS/afn-ca.key" -out "$CERTS/afn-ca.crt" 2>/dev/null
    chmod 600 "$CERTS/afn-ca.key"
    echo "   a new lab CA: $CERTS/afn-ca.crt (agents: [broker] ca_file)"
fi
chmod 644 "$CERTS/afn-ca.crt"

# The broker's names: those given, else this host's; always localhost (a client on the broker's host).
if [ ${#hosts[@]} -eq 0 ]; then
    hosts=("$(hostname)")
    full="$(hostname -f 2>/dev/null || true)"
    [ -n "$full" ] && [ "$full" != "${hosts[0]}" ] && hosts+=("$full")
    for ip in $(hostname -I 2>/dev/null || true); do hosts+=("$ip"); done
fi
san="DNS:localhost,IP:127.0.0.1"
for h in "${hosts[@]}"; do
    if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san="$san,IP:$h"; else san="$san,DNS:$h"; fi
done

sign() {  # sign <name> <subject CN> <extensions>: a key and a certificate signed by the lab CA
    local out="$1" cn="$2" ext="$3"
    umask 077
    openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$out.key" -out "$out.csr" 2>/dev/null
    openssl x509 -req -in "$out.csr" -CA "$CERTS/afn-ca.crt" -CAkey "$CERTS/afn-ca.key" -CAcreateserial \
        -days "$DAYS" -out "$out.crt" -extfile <(printf '%s\n' "$ext") 2>/dev/null
    rm -f "$out.csr"
    chmod 644 "$out.crt"
}
# The broker's certificate is made again when its names change (a new --host).
if [ ! -f "$CERTS/afn-broker.crt" ] || ! grep -qxF "$san" "$CERTS/afn-broker.names" 2>/dev/null; then
    sign "$CERTS/afn-broker" "${hosts[0]}" "subjectAltName=$san
extendedKeyUsage=serverAuth"
    private "$CERTS/afn-broker.key"
    echo "$san" > "$CERTS/afn-broker.names"
    echo "   broker certificate for $san"
fi
for user in "${users[@]}"; do
    if [ ! -f "$CERTS/clients/$user.crt" ]; then
        sign "$CERTS/clients/$user" "$user" "extendedKeyUsage=clientAuth"
        echo "   client certificate $CERTS/clients/$user.crt and .key, root's only"
        echo "   (optional: [broker] cert_file, key_file; copy both to the client's host)"
    fi
done

echo "== passwords $ETC/afn.passwd"
touch "$ETC/afn.passwd" "$ETC/afn-passwords.txt"
chmod 600 "$ETC/afn-passwords.txt"
for user in "${users[@]}"; do
    if grep -q "^$user:" "$ETC/afn.passwd"; then
        echo "   $user: kept"
        continue
    fi
    password="$(openssl rand -base64 24 | tr -d '/+=' | cut -c1-24)"
    mosquitto_passwd -b "$ETC/afn.passwd" "$user" "$password"
    echo "$user $password" >> "$ETC/afn-passwords.txt"
    echo "   $user: new password in $ETC/afn-passwords.txt"
done
private "$ETC/afn.passwd"
echo "== done: sudo systemctl restart mosquitto"
