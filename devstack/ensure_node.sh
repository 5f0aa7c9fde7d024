#!/bin/sh
# Installs Node.js and npm (Debian packages `nodejs`, `npm`) when missing: `make run`'s local S3
# server, s3rver, runs on Node.js. A no-op when both are on PATH; needs root or sudo otherwise.
set -eu
missing=""
command -v node >/dev/null 2>&1 || missing="nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure_node: Node.js/npm are missing and neither root nor sudo is available; install the Debian packages:$missing" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086 # one word per package
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || {
    echo "ensure_node: installed$missing but node or npm is still not on PATH" >&2
    exit 1
}
