#!/usr/bin/env bash
# Install Debian's chromium for the real-browser test of `pthkit serve` (tests/serve/test_browser.py).
# Idempotent: does nothing when /usr/bin/chromium exists. Needs root (CI containers run as root); otherwise it says
# what to run and exits 0, and the browser test skips with that reason. Playwright drives this system browser through
# executable_path: a browser downloaded by `playwright install` does not run here.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]; then
    echo "install-browser: chromium present: $(command -v chromium || echo /usr/bin/chromium)"
    exit 0
fi
if [ "$(id -u)" != "0" ]; then
    echo "install-browser: chromium missing and not root; run: sudo apt-get install -y chromium" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-browser: no apt-get on this system; install chromium yourself" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get install -y --no-install-recommends chromium || { apt-get update && apt-get install -y --no-install-recommends chromium; }
echo "install-browser: installed $(command -v chromium)"
