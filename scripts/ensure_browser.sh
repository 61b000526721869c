#!/usr/bin/env bash
# Make sure Debian's Chromium is installed for the review page's browser tests (tests/ui); install it
# from the distribution's packages only when /usr/bin/chromium is missing.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
  exit 0
fi
echo "installing chromium (Debian package) for the browser tests" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
test -x /usr/bin/chromium || { echo "chromium did not install to /usr/bin/chromium" >&2; exit 1; }
echo "chromium: $(/usr/bin/chromium --version 2>/dev/null || echo installed)" >&2
