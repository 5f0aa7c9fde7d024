#!/bin/sh
# Installs headless LibreOffice Calc (Debian package `libreoffice-calc`) for the xlsx format tests, which
# open the exported workbooks with a real spreadsheet engine, when it is missing. `make pytest` runs this
# first; it needs root or sudo, and only the Debian archive.
set -eu
LIBREOFFICE=${LIBREOFFICE:-/usr/bin/libreoffice}
[ -x "$LIBREOFFICE" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure_libreoffice: $LIBREOFFICE is missing and neither root nor sudo is available" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends libreoffice-calc >/dev/null
[ -x "$LIBREOFFICE" ] || { echo "ensure_libreoffice: installed libreoffice-calc but $LIBREOFFICE is still missing" >&2; exit 1; }
