// Role assignments. The Function App's identity: blob data (host storage, deployment package,
// data containers), user delegation keys (the read/write SAS GDAL gets), the queues and tables of
// the Durable Task hub, telemetry, and sending change events to the custom topic. The deploying
// principal: blob data for the first-run step, the task hub's queues and tables for the Durable
// Functions Monitor.
param storageAccountName string
param applicationInsightsName string
param changeTopicName string
param appPrincipalId string
param deployerPrincipalId string
param deployerPrincipalType string

// Built-in role definition ids (docs/deploy.md names each role and why it is granted).
var roles = {
  'Storage Blob Data Contributor': 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  'Storage Blob Delegator': 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'
  'Storage Queue Data Contributor': '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  'Storage Table Data Contributor': '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  'Monitoring Metrics Publisher': '3913510d-42f4-4e42-8a64-420c390055eb'
  'EventGrid Data Sender': 'd5a91429-5739-47e2-a06b-3470a27159e7'
}
var appStorageRoles = [
  'Storage Blob Data Contributor'
  'Storage Blob Delegator'
  'Storage Queue Data Contributor'
  'Storage Table Data Contributor'
]
var deployerStorageRoles = [
  'Storage Blob Data Contributor'
  'Storage Queue Data Contributor'
  'Storage Table Data Contributor'
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource changeTopic 'Microsoft.EventGrid/topics@2022-06-15' existing = {
  name: changeTopicName
}

resource appStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appStorageRoles: {
  name: guid(storage.id, appPrincipalId, roles[role])
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles[role])
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles['Monitoring Metrics Publisher'])
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['Monitoring Metrics Publisher'])
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appChangeEvents 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(changeTopic.id, appPrincipalId, roles['EventGrid Data Sender'])
  scope: changeTopic
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles['EventGrid Data Sender'])
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource deployerStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in deployerStorageRoles: {
  name: guid(storage.id, deployerPrincipalId, roles[role])
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles[role])
    principalId: deployerPrincipalId
    principalType: deployerPrincipalType
  }
}]
