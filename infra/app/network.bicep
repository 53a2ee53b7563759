// The private network of postgresAccess 'privateEndpoint': a virtual network with a subnet the
// Flex Consumption app integrates with (delegated to Microsoft.App/environments) and a subnet for
// the PostgreSQL server's private endpoint, and the private DNS zone that resolves the server's
// name to that endpoint inside the network. docs/deploy.md weighs it against the 'azureServices' rule.
param location string
param tags object
param name string
param addressPrefix string = '10.40.0.0/16'
param appSubnetPrefix string = '10.40.0.0/24'
param endpointSubnetPrefix string = '10.40.1.0/24'

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [addressPrefix] }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          // Flex Consumption integrates through this delegation (the Microsoft.App provider must be registered).
          delegations: [
            {
              name: 'flex-consumption'
              properties: { serviceName: 'Microsoft.App/environments' }
            }
          ]
          // The app still reaches storage, Entra ID and Application Insights on their public endpoints.
          defaultOutboundAccess: true
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: endpointSubnetPrefix
          privateEndpointNetworkPolicies: 'Disabled'
          defaultOutboundAccess: false
        }
      }
    ]
  }
}

resource dnsZone 'Microsoft.Network/privateDnsZones@2024-06-01' = {
  name: 'privatelink.postgres.database.azure.com'
  location: 'global'
  tags: tags
}

resource dnsLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = {
  parent: dnsZone
  name: '${name}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}

output appSubnetId string = vnet.properties.subnets[0].id
output endpointSubnetId string = vnet.properties.subnets[1].id
output postgresDnsZoneId string = dnsZone.id
