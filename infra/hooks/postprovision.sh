#!/bin/sh
# azd postprovision: the first-run steps (deploy.py first-run), idempotent: pgSTAC migrated with an
# Entra token, the Function App identity's database role, default collections, the containers.
# azd exports the provisioning outputs (RMH_*, AZURE_*) to this script's environment.
set -eu
cd "$(dirname "$0")/../.."
. infra/hooks/python.sh
hook_venv
exec "$HOOK_VENV_PYTHON" deploy.py first-run \
  --admin-user "$AZURE_PRINCIPAL_NAME" \
  --app-role "$AZURE_FUNCTION_APP_NAME" \
  --app-object-id "$AZURE_FUNCTION_PRINCIPAL_ID"
