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
# Also the PostgreSQL JDBC driver (Debian package `libpostgresql-jdbc-java`, /usr/share/java/
# postgresql.jar) for `--source jdbc:postgresql://...`.
major="$(java_major)"
packages=""
[ "${major:-0}" -ge 17 ] 2>/dev/null || packages="default-jre-headless"
[ -f /usr/share/java/postgresql.jar ] || packages="$packages libpostgresql-jdbc-java"
if [ -z "$packages" ]; then
    exit 0
fi
if [ "$(id -u)" != "0" ] && ! command -v sudo >/dev/null 2>&1; then
    echo "install-java: need$packages, but not root and no sudo; the Spark tests will be skipped" >&2
    exit 0
fi
SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
echo "install-java: installing Debian package(s)$packages (Java ${major:-none} found)" >&2
export DEBIAN_FRONTEND=noninteractive
# shellcheck disable=SC2086
( $SUDO apt-get update -qq && $SUDO apt-get install -y -qq $packages >/dev/null ) \
    || echo "install-java: apt-get failed; the Spark tests will be skipped" >&2
exit 0
