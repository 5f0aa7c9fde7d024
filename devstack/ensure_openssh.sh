#!/bin/sh
# Installs the OpenSSH server (Debian package `openssh-server`) for the SFTP destination tests, which start
# their own sshd on a loopback port with their own configuration and keys, when it is missing. `make pytest`
# runs this first; it needs root or sudo, and only the Debian archive. The tests never use the machine's own
# sshd service nor /etc/ssh.
set -eu
SSHD=${SSHD:-/usr/sbin/sshd}
[ -x "$SSHD" ] && exit 0
if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; else
    echo "ensure_openssh: $SSHD is missing and neither root nor sudo is available" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
[ -x "$SSHD" ] || { echo "ensure_openssh: installed openssh-server but $SSHD is still missing" >&2; exit 1; }
