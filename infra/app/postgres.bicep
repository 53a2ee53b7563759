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
@description('Subnet of the server\'s private endpoint (postgresAccess privateEndpoint); empty: the "Azure services" firewall rule instead.')
param privateEndpointSubnetId string = ''
@description('Private DNS zone privatelink.postgres.database.azure.com, with privateEndpointSubnetId.')
param privateDnsZoneId string = ''

var privateAccess = !empty(privateEndpointSubnetId)

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

// postgresAccess 'azureServices': a Flex Consumption app without a virtual network has no fixed
// outbound addresses, so connections from any Azure address are let through (every tenant's; still
// Entra-authenticated and TLS-only). With 'privateEndpoint' the app comes through the endpoint below.
resource allowAzure 'Microsoft.DBforPostgreSQL/flexibleServers/firewallRules@2024-08-01' = if (!privateAccess) {
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
  dependsOn: [allowAzure, database]
}

// postgresAccess 'privateEndpoint': the app reaches the server on a private address in the virtual
// network; the public endpoint lets through only clientIpAddress (the first-run step).
resource privateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = if (privateAccess) {
  name: 'pe-${name}'
  location: location
  tags: tags
  properties: {
    subnet: { id: privateEndpointSubnetId }
    privateLinkServiceConnections: [
      {
        name: 'postgres'
        properties: {
          privateLinkServiceId: server.id
          groupIds: ['postgresqlServer']
        }
      }
    ]
  }
  dependsOn: [database]
}

resource privateDns 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = if (privateAccess) {
  parent: privateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'postgres'
        properties: { privateDnsZoneId: privateDnsZoneId }
      }
    ]
  }
}

output name string = server.name
output fqdn string = server.properties.fullyQualifiedDomainName
