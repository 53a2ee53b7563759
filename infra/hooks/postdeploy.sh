#!/bin/sh
# azd postdeploy: once blob_events exists in the deployed app, subscribe it to the storage
# account's BlobCreated / BlobDeleted events (endpoint type azurefunction), and remember it so
# later provisioning keeps the subscription in Bicep (BLOB_EVENTS_ENABLED=true).
set -eu
[ "${BLOB_EVENTS_ENABLED:-false}" = "true" ] && exit 0
function_id="$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query id -o tsv)/functions/blob_events"
if ! az resource show --ids "$function_id" >/dev/null 2>&1; then
  echo "blob_events is not deployed yet: no Event Grid subscription created" >&2
  exit 0
fi
containers=$(printf '%s' "$RMH_INPUT_CONTAINER${RMH_SYNC_CONTAINERS:+,$RMH_SYNC_CONTAINERS}" | tr ',' '\n' |
  sed 's#.*#/blobServices/default/containers/&/#' | tr '\n' ' ')
# shellcheck disable=SC2086 # one prefix per word
az eventgrid system-topic event-subscription create \
  -g "$AZURE_RESOURCE_GROUP" --system-topic-name "$AZURE_EVENTGRID_SYSTEM_TOPIC" -n blobevents \
  --endpoint-type azurefunction --endpoint "$function_id" \
  --included-event-types Microsoft.Storage.BlobCreated Microsoft.Storage.BlobDeleted \
  --advanced-filter subject StringBeginsWith $containers \
  --advanced-filter subject StringEndsWith .tif .tiff .TIF .TIFF \
  --max-delivery-attempts 30 --event-ttl 1440 \
  --max-events-per-batch 1 --preferred-batch-size-in-kilobytes 64 \
  --deadletter-identity systemassigned \
  --deadletter-identity-endpoint "$(az storage account show -n "$AZURE_STORAGE_ACCOUNT_NAME" --query id -o tsv)/blobServices/default/containers/eventgrid-deadletter"
azd env set BLOB_EVENTS_ENABLED true
