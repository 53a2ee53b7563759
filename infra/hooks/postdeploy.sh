#!/bin/sh
# azd postdeploy: wait (bounded: BLOB_EVENTS_WAIT_SECONDS, default 600) until the deployed app has
# indexed blob_events, then create or update the Event Grid subscription(s) delivering the watched
# containers' BlobCreated / BlobDeleted events to it (azd_hooks.py subscribe-events). Fails, and
# so fails `azd up`, when the function does not appear: blob events would silently go nowhere.
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/python.sh
hook_python
exec "$HOOK_PYTHON" azd_hooks.py subscribe-events
