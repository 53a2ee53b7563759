// Blob events to the app: an Event Grid system topic on the storage account, with a
// system-assigned identity that dead-letters undeliverable events to a container. The
// subscription(s) delivering BlobCreated / BlobDeleted to the blob_events function are created by
// the postdeploy hook (azd_hooks.py subscribe-events): the function must exist first, and the
// subject filter's name endings come from the app's own list (raster_names.py), which Bicep cannot read.
param location string
param tags object
param name string
param storageAccountName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// Dead-lettering writes blobs with the topic's identity.
var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, topic.id, blobDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output systemTopicName string = topic.name
