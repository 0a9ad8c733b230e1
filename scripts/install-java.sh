#!/usr/bin/env bash
# Installs Java 17+ for the spark engine's tests (Debian package `default-jre-headless`) when the
# `java` on PATH (or in JAVA_HOME) is missing or older. pyspark itself comes with the `spark` extra.
# Never fails the build: when installation is impossible the Spark tests skip and say why.
set -u
java_major() {
    local exe="java"
    [ -n "${JAVA_HOME:-}" ] && [ -x "$JAVA_HOME/bin/java" ] && exe="$JAVA_HOME/bin/java"
    command -v "$exe" >/dev/null 2>&1 || { echo 0; return; }
    "$exe" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\.\{0,1\}\([0-9]*\).*/\1 \2/p' | head -n 1 \
        | awk '{ print ($1 == 1 ? $2 : $1) + 0 }'
}
major="$(java_major)"
if [ "${major:-0}" -ge 17 ] 2>/dev/null; then
    exit 0
fi
if [ "$(id -u)" != "0" ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install-java: Java 17+ not found, not root and no sudo; the Spark tests will be skipped" >&2
    exit 0
fi
SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
echo "install-java: installing Debian package default-jre-headless (Java ${major:-none} found)" >&2
export DEBIAN_FRONTEND=noninteractive
( $SUDO apt-get update -qq && $SUDO apt-get install -y -qq default-jre-headless >/dev/null ) \
    || echo "install-java: apt-get failed; the Spark tests will be skipped" >&2
exit 0
