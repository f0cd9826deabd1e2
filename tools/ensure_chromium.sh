#!/usr/bin/env bash
# The dashboard's browser test (tests/integration/test_dashboard_browser.py) drives Debian's Chromium;
# Playwright's own browser download is not used. `make test` and .ci/run call this first: with no
# `chromium` on PATH it installs Debian's package when it can (root, or passwordless sudo), otherwise it
# stops at once with one line saying what to install, so a run never fails deep inside the test.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi

missing() {
  echo "Chromium is missing (the dashboard's browser test needs it): $1" >&2
  exit 1
}

if [ "$(id -u)" = 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
  as_root=(sudo -n)
else
  missing "run 'apt-get install chromium' as root, then make test again"
fi
command -v apt-get >/dev/null 2>&1 || missing "install Debian's 'chromium' package (apt-get install chromium)"

echo "Chromium is missing: installing Debian's chromium with apt-get" >&2
if ! { ${as_root[@]+"${as_root[@]}"} apt-get update -qq \
       && ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
  missing "'apt-get install chromium' failed (its output is above); install it, then make test again"
fi
command -v chromium >/dev/null 2>&1 || missing "apt-get installed chromium but it is not on PATH"
