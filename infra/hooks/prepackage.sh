#!/bin/sh
# azd prepackage (service api): build what `make package` builds, unpacked into dist/app, which
# azure.yaml names as the service's `dist`: azd zips that directory and deploys it, so the
# package carries the dashboard's npm files (dashboard/vendor/) and nothing .funcignore leaves out.
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/python.sh
hook_venv
command -v npm >/dev/null 2>&1 || {
  echo "error: the package carries the dashboard's libraries from npm: install Node.js 20+ with npm" >&2
  exit 1
}
make -s node_modules/.installed
exec "$HOOK_VENV_PYTHON" deploy.py package --dir dist/app
