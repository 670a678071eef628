#!/usr/bin/env bash
# Prove install.sh on a clean Debian root: debootstrap bookworm, run install.sh twice, then check that
# `afn-agent check-config` inside it refuses a wrong port, an unknown profile and a missing tariff.
#   sudo ./deploy/test-install-chroot.sh [/tmp/afn-debroot]
set -euo pipefail
SRC="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${1:-/tmp/afn-debroot}"
rm -rf "$ROOT"
debootstrap --variant=minbase bookworm "$ROOT" http://deb.debian.org/debian >/dev/null
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# a site behind a TLS-inspecting proxy trusts its CA in the new root as on the host
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    [ -f /etc/pip.conf ] && cp /etc/pip.conf "$ROOT/etc/pip.conf"
fi
mkdir -p "$ROOT/root/afn-src"
git -C "$SRC" archive HEAD | tar -C "$ROOT/root/afn-src" -xf -
mount --bind /dev "$ROOT/dev"
mount -t proc proc "$ROOT/proc"
trap 'umount "$ROOT/proc" "$ROOT/dev" 2>/dev/null || true' EXIT
chroot "$ROOT" bash -c "apt-get update -qq && apt-get install -y -qq ca-certificates >/dev/null && update-ca-certificates >/dev/null"
for run in 1 2; do
    start=$(date +%s)
    chroot "$ROOT" bash /root/afn-src/deploy/install.sh
    echo "install.sh run $run: ok in $(( $(date +%s) - start )) s"
done
chroot "$ROOT" bash -c 'id afn-agent && stat -c "%U:%G %a %n" /var/lib/afn-agent /etc/afn-agent /etc/afn-agent/agent.toml && test -f /etc/systemd/system/afn-agent.service'
check() {  # expect check-config to fail with a message containing $2 after the sed edit $1
    local out
    out=$(chroot "$ROOT" bash -c "sed '$1' /etc/afn-agent/agent.toml > /tmp/bad.toml; afn-agent check-config /tmp/bad.toml" 2>&1 || true)
    echo "$out"
    grep -q "$2" <<<"$out" && echo "check-config: caught: $2"
}
check 's#/dev/afn/printer-1#/dev/afn/nope#' "port /dev/afn/nope does not exist"
check 's#"prusa-mk3"#"prusa-mk9"#' "unknown profile 'prusa-mk9'"
check 's#tariff = "printer"#tariff = "laser"#' "no \[tariffs.laser\]"
echo "clean-root install test: passed"
