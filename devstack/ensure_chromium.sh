#!/bin/sh
# Installs headless Chromium (Debian package `chromium`) for the /docs browser test when it is missing.
# `make pytest` runs this first; it needs root or sudo, and only the Debian archive.
set -eu
CHROMIUM=${CHROMIUM:-/usr/bin/chromium}
[ -x "$CHROMIUM" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure_chromium: $CHROMIUM is missing and neither root nor sudo is available" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
[ -x "$CHROMIUM" ] || { echo "ensure_chromium: installed chromium but $CHROMIUM is still missing" >&2; exit 1; }
