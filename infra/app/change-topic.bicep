// Catalog change events: an Event Grid custom topic the app publishes one CloudEvent 1.0 to per
// item created, updated, deleted, published or revoked (change_events.py). Identity only: local
// (key and SAS) authentication is off, so only principals holding "EventGrid Data Sender" on the
// topic (the app, granted in rbac.bicep) can publish. Subscribers (webhooks, Service Bus, Event
// Hubs, functions of other apps) are theirs to add: docs/deploy.md has the command.
param location string
param tags object
param name string

resource topic 'Microsoft.EventGrid/topics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  // Its own identity, for subscriptions that deliver with it (Service Bus, Event Hubs, queues).
  identity: { type: 'SystemAssigned' }
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output name string = topic.name
output endpoint string = topic.properties.endpoint
