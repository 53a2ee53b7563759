// rmhgeoapi on Azure: a Flex Consumption Function App with a system-assigned identity, storage
// with shared-key access disabled, PostgreSQL Flexible Server (PostGIS, Entra ID auth), Event Grid
// for blob events and a custom topic for catalog change events, Application Insights.
// docs/deploy.md describes every resource, role and setting.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; with the subscription and region it seeds every resource name.')
param environmentName string

@minLength(1)
@description('Region of every resource (one that offers Flex Consumption).')
@metadata({ azd: { type: 'location' } })
param location string

@description('Object id of the deploying user or service principal: PostgreSQL Entra administrator, blob data access for the first-run step.')
param principalId string

@description('Sign-in name of that principal (user principal name, or the service principal\'s display name).')
param principalName string

@allowed(['User', 'ServicePrincipal', 'Group'])
@description('Kind of principal principalId is.')
param principalType string = 'User'

@allowed(['3.11', '3.12', '3.13'])
@description('Python of the Function App (README: which one to deploy and why).')
param pythonVersion string = '3.12'

@allowed([2048, 4096])
@description('Memory of one Flex Consumption instance in MB (GDAL working sets; see docs/deploy.md).')
param instanceMemoryMB int = 4096

// Flex Consumption's documented bounds: the lowest maximum is 1 (it was 40 during the preview), the
// highest 1000. The preprovision hook checks the bounds the platform reports for the region
// (az functionapp list-flexconsumption-runtimes: lowest/highestMaximumInstanceCount).
@minValue(1)
@maxValue(1000)
@description('Upper bound of Flex Consumption instances the app scales out to (1 to 1000; the region may narrow it).')
param maximumInstanceCount int = 40

@description('Durable task hub name (RMH_TASK_HUB_NAME).')
param taskHubName string = 'rmhgeoapi'

@description('Container the rasters land in (RMH_INPUT_CONTAINER).')
param inputContainer string = 'rasters'

@description('Container of the COGs and tiles (RMH_OUTPUT_CONTAINER).')
param outputContainer string = 'cogs'

@description('Container of inventories and job plans (RMH_SYSTEM_CONTAINER).')
param systemContainer string = 'rmh-system'

@description('Comma-separated containers the scheduled sync catalogs (RMH_SYNC_CONTAINERS).')
param syncContainers string = ''

@description('Six-field NCRONTAB schedule of the sync (RMH_SYNC_SCHEDULE).')
param syncSchedule string = '0 0 */6 * * *'

@description('Base URL of a titiler-pgstac serving the catalog (RMH_TILER_URL); empty: mosaics are registered, their links left out.')
param tilerUrl string = ''

@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGZRS'])
@description('Replication of the storage account (Standard_GZRS when it holds the only copy of the rasters).')
param storageSku string = 'Standard_ZRS'

@description('Origins allowed to read blobs from a browser (CORS: STAC Browser, the dashboard); empty: none.')
param blobCorsOrigins array = []

@description('PostgreSQL Flexible Server compute SKU.')
param postgresSku string = 'Standard_B2s'

@allowed(['Burstable', 'GeneralPurpose', 'MemoryOptimized'])
@description('Tier of postgresSku.')
param postgresTier string = 'Burstable'

@description('PostgreSQL storage in GB.')
param postgresStorageGB int = 32

@description('Public IP address allowed through the PostgreSQL firewall for the first-run step (empty: none).')
param clientIpAddress string = ''

@allowed(['azureServices', 'privateEndpoint'])
@description('How the app reaches PostgreSQL: the firewall rule for all Azure addresses, or a virtual network with a private endpoint (docs/deploy.md: the trade-off).')
param postgresAccess string = 'azureServices'

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-rmh-${resourceToken}'
var storageAccountName = 'strmh${resourceToken}'
var postgresServerName = 'psql-rmh-${resourceToken}'
var postgresDatabase = 'pgstac'
var deploymentContainer = 'app-package-${resourceToken}'
var deadLetterContainer = 'eventgrid-deadletter'
var syncContainerList = empty(trim(syncContainers)) ? [] : split(replace(syncContainers, ' ', ''), ',')
var dataContainers = union([inputContainer, outputContainer, systemContainer], syncContainerList)
// Containers whose blob events reach the app: the input container and every synced one.
var eventContainers = union([inputContainer], syncContainerList)
var privateNetwork = postgresAccess == 'privateEndpoint'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-rmh-${resourceToken}'
    applicationInsightsName: 'appi-rmh-${resourceToken}'
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    location: location
    tags: tags
    name: storageAccountName
    skuName: storageSku
    corsAllowedOrigins: blobCorsOrigins
    containers: union(dataContainers, [deploymentContainer, deadLetterContainer])
  }
}

module network 'app/network.bicep' = if (privateNetwork) {
  name: 'network'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'vnet-rmh-${resourceToken}'
  }
}

module postgres 'app/postgres.bicep' = {
  name: 'postgres'
  scope: rg
  params: {
    location: location
    tags: tags
    name: postgresServerName
    databaseName: postgresDatabase
    skuName: postgresSku
    skuTier: postgresTier
    storageSizeGB: postgresStorageGB
    adminPrincipalId: principalId
    adminPrincipalName: principalName
    adminPrincipalType: principalType
    clientIpAddress: clientIpAddress
    privateEndpointSubnetId: privateNetwork ? network.outputs.endpointSubnetId : ''
    privateDnsZoneId: privateNetwork ? network.outputs.postgresDnsZoneId : ''
  }
}

module changes 'app/change-topic.bicep' = {
  name: 'change-topic'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'evgt-changes-rmh-${resourceToken}'
  }
}

// The app's own settings (settings.py reads every RMH_* key; docs/deploy.md explains each).
var rmhSettings = {
  RMH_TASK_HUB_NAME: taskHubName
  RMH_STORAGE_BACKEND: 'azure'
  RMH_STORAGE_ACCOUNT_URL: storage.outputs.blobEndpoint
  RMH_SAS_TTL_MINUTES: '60'
  RMH_INPUT_CONTAINER: inputContainer
  RMH_OUTPUT_CONTAINER: outputContainer
  RMH_SYSTEM_CONTAINER: systemContainer
  RMH_CATALOG_BACKEND: 'pgstac'
  RMH_PGSTAC_DSN: 'host=${postgres.outputs.fqdn} port=5432 dbname=${postgresDatabase} user=${functionAppName} sslmode=require'
  RMH_PGSTAC_USE_MANAGED_IDENTITY: 'true'
  RMH_SYNC_CONTAINERS: join(syncContainerList, ',')
  RMH_SYNC_SCHEDULE: syncSchedule
  RMH_EVENT_CONTAINERS: join(eventContainers, ',')
  RMH_SYNC_CHUNK_SIZE: '100'
  RMH_TILER_URL: tilerUrl
  RMH_EVENT_GRID_ENDPOINT: changes.outputs.endpoint
  RMH_EVENT_SOURCE: '/rmhgeoapi/${functionAppName}'
  RMH_EVENT_DRAIN_SCHEDULE: '0 * * * * *'
  RMH_MAX_PIXELS_PER_TASK: '67108864'
  RMH_TILE_SIZE: '4096'
  RMH_GDAL_OPTIONS: string({
    GDAL_DISABLE_READDIR_ON_OPEN: 'EMPTY_DIR'
    GDAL_HTTP_MAX_RETRY: '5'
    GDAL_HTTP_RETRY_DELAY: '1'
    GDAL_CACHEMAX: '256'
  })
}

module functionApp 'app/function-app.bicep' = {
  name: 'function-app'
  scope: rg
  params: {
    location: location
    tags: tags
    name: functionAppName
    planName: 'plan-rmh-${resourceToken}'
    storageAccountName: storage.outputs.name
    deploymentContainer: deploymentContainer
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    virtualNetworkSubnetId: privateNetwork ? network.outputs.appSubnetId : ''
    appSettings: rmhSettings
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    changeTopicName: changes.outputs.name
    appPrincipalId: functionApp.outputs.principalId
    deployerPrincipalId: principalId
    deployerPrincipalType: principalType
  }
}

module events 'app/event-grid.bicep' = {
  name: 'event-grid'
  scope: rg
  params: {
    location: location
    tags: tags
    name: 'evgt-rmh-${resourceToken}'
    storageAccountName: storage.outputs.name
  }
}

// azd stores these in the environment (azd env get-values); the hooks and deploy.py read them.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = functionApp.outputs.url
output AZURE_FUNCTION_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_POSTGRES_SERVER_NAME string = postgres.outputs.name
output AZURE_EVENTGRID_SYSTEM_TOPIC string = events.outputs.systemTopicName
output AZURE_EVENTGRID_DEADLETTER_CONTAINER string = deadLetterContainer
output AZURE_EVENTGRID_CHANGES_TOPIC string = changes.outputs.name
output RMH_TASK_HUB_NAME string = rmhSettings.RMH_TASK_HUB_NAME
output RMH_STORAGE_BACKEND string = rmhSettings.RMH_STORAGE_BACKEND
output RMH_STORAGE_ACCOUNT_URL string = rmhSettings.RMH_STORAGE_ACCOUNT_URL
output RMH_INPUT_CONTAINER string = rmhSettings.RMH_INPUT_CONTAINER
output RMH_OUTPUT_CONTAINER string = rmhSettings.RMH_OUTPUT_CONTAINER
output RMH_SYSTEM_CONTAINER string = rmhSettings.RMH_SYSTEM_CONTAINER
output RMH_CATALOG_BACKEND string = rmhSettings.RMH_CATALOG_BACKEND
output RMH_PGSTAC_DSN string = rmhSettings.RMH_PGSTAC_DSN
output RMH_PGSTAC_USE_MANAGED_IDENTITY string = rmhSettings.RMH_PGSTAC_USE_MANAGED_IDENTITY
output RMH_SYNC_CONTAINERS string = rmhSettings.RMH_SYNC_CONTAINERS
output RMH_EVENT_CONTAINERS string = rmhSettings.RMH_EVENT_CONTAINERS
output RMH_EVENT_GRID_ENDPOINT string = rmhSettings.RMH_EVENT_GRID_ENDPOINT
