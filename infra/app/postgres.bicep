// Azure Database for PostgreSQL Flexible Server for pgSTAC: Entra ID authentication only (no
// password), PostGIS and the other extensions pgSTAC creates allow-listed in azure.extensions,
// the deploying principal as Entra administrator. deploy.py first-run migrates pgSTAC and creates
// the Function App identity's role.
param location string
param tags object
param name string
param databaseName string
param skuName string
param skuTier string
param storageSizeGB int
param postgresVersion string = '16'
param adminPrincipalId string
param adminPrincipalName string
param adminPrincipalType string
param clientIpAddress string = ''

resource server 'Microsoft.DBforPostgreSQL/flexibleServers@2024-08-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: skuName
    tier: skuTier
  }
  properties: {
    version: postgresVersion
    storage: {
      storageSizeGB: storageSizeGB
      autoGrow: 'Enabled'
    }
    backup: {
      backupRetentionDays: 7
      geoRedundantBackup: 'Disabled'
    }
    highAvailability: { mode: 'Disabled' }
    authConfig: {
      activeDirectoryAuth: 'Enabled'
      passwordAuth: 'Disabled'
      tenantId: tenant().tenantId
    }
    network: { publicNetworkAccess: 'Enabled' }
  }
}

// pgSTAC's migrations run CREATE EXTENSION for these; Azure refuses extensions not listed here.
resource extensions 'Microsoft.DBforPostgreSQL/flexibleServers/configurations@2024-08-01' = {
  parent: server
  name: 'azure.extensions'
  properties: {
    value: 'POSTGIS,BTREE_GIST,UNACCENT'
    source: 'user-override'
  }
}

// The server applies one change at a time: each step waits for the one before.
resource administrator 'Microsoft.DBforPostgreSQL/flexibleServers/administrators@2024-08-01' = {
  parent: server
  name: adminPrincipalId
  properties: {
    principalName: adminPrincipalName
    principalType: adminPrincipalType
    tenantId: tenant().tenantId
  }
  dependsOn: [extensions]
}

resource database 'Microsoft.DBforPostgreSQL/flexibleServers/databases@2024-08-01' = {
  parent: server
  name: databaseName
  properties: {
    charset: 'UTF8'
    collation: 'en_US.utf8'
  }
  dependsOn: [administrator]
}

// Flex Consumption apps without a virtual network have no fixed outbound addresses: allow
// connections from Azure (still Entra-authenticated and TLS-only).
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = {
  parent: server
  name: 'AllowAllAzureServicesAndResourcesWithinAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
  dependsOn: [database]
}

resource allowClient 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!empty(clientIpAddress)) {
  parent: server
  name: 'first-run-client'
  properties: {
    startIpAddress: clientIpAddress
    endIpAddress: clientIpAddress
  }
  dependsOn: [allowAzure]
}

output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
