#!/usr/bin/env bash
# Set up a checkout for the demo and the tests on Debian / Raspberry Pi OS: system packages, then a
# virtualenv in .venv with the project installed editable. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the agent, its demo and its tests use: a real MQTT broker, headless Chromium for the
# kiosk page tests, promtool (Debian's prometheus package) to check /metrics, openssl for TLS tests;
# gcc and python3-dev build the analyzer's compiled part (afn_agent/gcode/_core.c); ffmpeg grabs camera
# snapshots (and serves the test camera's MJPEG stream); nats-server is the clustered broker the
# network-of-labs test and bench/fleet_scale.py start on loopback ports (tests/nats.py).
PACKAGES="python3 python3-venv python3-pip python3-dev gcc mosquitto mosquitto-clients nats-server chromium prometheus openssl socat ffmpeg"
# npm fetches axe-core, the accessibility checker the console's browser tests run inside Chromium; a
# machine with Node.js from elsewhere (NodeSource) has npm already, and Debian's npm would conflict with it.
command -v npm >/dev/null 2>&1 || PACKAGES="$PACKAGES npm"

if command -v apt-get >/dev/null 2>&1; then
    missing=""
    for pkg in $PACKAGES; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing="$missing $pkg"
    done
    if [ -n "$missing" ]; then
        SUDO=""
        [ "$(id -u)" -eq 0 ] || SUDO="sudo"
        echo "installing:$missing" >&2
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
        # The tests need only promtool from the prometheus package, not a Prometheus server running.
        case " $missing " in *" prometheus "*)
            $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true ;;
        esac
        # nor a NATS server of the machine's own: the tests start theirs
        case " $missing " in *" nats-server "*)
            $SUDO systemctl disable --now nats-server >/dev/null 2>&1 || true ;;
        esac
    fi
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'
# atheris (coverage-guided fuzzing) ships wheels for x86_64 only; elsewhere its test is skipped
.venv/bin/python -m pip install -q -e '.[fuzz]' 2>/dev/null || echo "atheris not installed: fuzz test skipped" >&2
# axe-core (npm), pinned: the console pages are checked with it in headless Chromium (tests only)
if [ ! -f .cache/node/node_modules/axe-core/axe.min.js ]; then
    npm install --no-audit --no-fund --silent --prefix .cache/node axe-core@4.10.3 >/dev/null ||
        echo "axe-core not installed: the accessibility checks will fail in CI" >&2
fi
# Home Assistant itself (tests only, CI or AFN_WITH_HA=1): the discovery test validates every config with
# HA's own MQTT schemas and renders its templates with HA's engine. 2024.3.3 is the last release that runs
# on Python 3.11 (Debian 12); without it the test checks the documented fields instead, and says so.
if [ -n "${CI:-}${AFN_WITH_HA:-}" ] && [ ! -f .cache/ha/installed ]; then
    { python3 -m venv .cache/ha && .cache/ha/bin/python -m pip install -q 'homeassistant==2024.3.3' &&
        touch .cache/ha/installed; } ||
        { rm -rf .cache/ha; echo "Home Assistant not installed: discovery checked against documented fields" >&2; }
fi
