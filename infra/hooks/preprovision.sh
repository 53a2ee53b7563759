#!/bin/sh
# azd preprovision: record who deploys (the PostgreSQL Entra administrator and holder of blob
# data access for the first-run step) unless the environment already names a principal.
set -eu
if [ -z "${AZURE_PRINCIPAL_NAME:-}" ]; then
  if name=$(az ad signed-in-user show --query userPrincipalName -o tsv 2>/dev/null) && [ -n "$name" ]; then
    azd env set AZURE_PRINCIPAL_NAME "$name"
    azd env set AZURE_PRINCIPAL_TYPE User
  else
    echo "Set AZURE_PRINCIPAL_NAME (and AZURE_PRINCIPAL_TYPE=ServicePrincipal) for a non-user deployer:" >&2
    echo "  azd env set AZURE_PRINCIPAL_NAME <display name>; azd env set AZURE_PRINCIPAL_TYPE ServicePrincipal" >&2
    exit 1
  fi
fi
