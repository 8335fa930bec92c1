#!/usr/bin/env bash
# The Kannel tests run Debian's Kannel (bearerbox, smsbox and the fake SMSC of kannel-extras); install it once.
set -euo pipefail
if [ -x /usr/sbin/bearerbox ] && [ -x /usr/sbin/smsbox ] && [ -x /usr/lib/kannel/test/fakesmsc ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kannel kannel-extras >/dev/null
else
  echo "Kannel is missing: install Debian's kannel and kannel-extras packages (apt-get install kannel kannel-extras) for the Kannel tests" >&2
  exit 1
fi
