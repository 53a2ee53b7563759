// The one storage account: AzureWebJobsStorage (host, Durable task hub queues/tables/blobs), the
// Flex Consumption deployment container, and the data containers. Shared-key access is disabled:
// every caller authenticates with Entra ID (identities and role assignments in rbac.bicep).
param location string
param tags object
param name string
param containers array
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS', 'Standard_RAGZRS'])
param skuName string = 'Standard_ZRS'
param softDeleteDays int = 7
@description('Origins browsers may read blobs from with CORS (STAC Browser, the dashboard); empty: none.')
param corsAllowedOrigins array = []

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: skuName }
  properties: {
    accessTier: 'Hot'
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: softDeleteDays }
    containerDeleteRetentionPolicy: { enabled: true, days: softDeleteDays }
    // Browser-based readers (STAC Browser's COG layer) read signed blobs with Range requests.
    cors: {
      corsRules: empty(corsAllowedOrigins) ? [] : [
        {
          allowedOrigins: corsAllowedOrigins
          allowedMethods: ['GET', 'HEAD', 'OPTIONS']
          allowedHeaders: ['range', 'if-none-match', 'if-modified-since', 'x-ms-*']
          exposedHeaders: ['content-range', 'content-length', 'accept-ranges', 'etag', 'last-modified']
          maxAgeInSeconds: 3600
        }
      ]
    }
  }
}

resource blobContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for container in containers: {
  parent: blobService
  name: container
  properties: { publicAccess: 'None' }
}]

output name string = account.name
output id string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
