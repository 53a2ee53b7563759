#!/bin/sh
# azd preprovision: before anything is created, check what a first deployment needs and say
# everything that is missing at once (azd_hooks.py preflight: tools, the deploying principal,
# CLIENT_IP_ADDRESS, outbound TCP 5432, the region's Flex Consumption Python and scale bounds).
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/python.sh
hook_python
exec "$HOOK_PYTHON" azd_hooks.py preflight
