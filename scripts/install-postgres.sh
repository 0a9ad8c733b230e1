#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (Debian package `postgresql`) when they are missing.
# The test suite starts its own private cluster on 127.0.0.1; nothing is started here.
# Never fails the build: when installation is impossible the PostgreSQL tests skip and say why.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != "0" ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install-postgres: not root and no sudo; PostgreSQL store tests will be skipped" >&2
    exit 0
fi
SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
echo "install-postgres: installing Debian package postgresql" >&2
export DEBIAN_FRONTEND=noninteractive
( $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null ) \
    || echo "install-postgres: apt-get failed; PostgreSQL store tests will be skipped" >&2
exit 0
