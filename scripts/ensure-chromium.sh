#!/usr/bin/env bash
# The Prefect UI test drives Debian's Chromium (browser downloads are impossible here); install it once.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "Chromium is missing: install Debian's chromium package (apt-get install chromium) for the Prefect UI test" >&2
  exit 1
fi
