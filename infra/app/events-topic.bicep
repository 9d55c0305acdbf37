metadata description = 'Optional custom topic for Batch.Outputs.QuotaExceeded CloudEvents (new or existing), with EventGrid Data Sender for the app identity. Local (key) auth off on a new topic.'

param name string

@description('Create the topic (true) or use an existing one of that name in this resource group (false).')
param create bool

param location string = resourceGroup().location
param tags object = {}

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

var eventGridDataSender = 'd5a91429-5739-47e2-a06b-3470a27159e7'

resource created 'Microsoft.EventGrid/topics@2025-02-15' = if (create) {
  name: name
  location: location
  tags: tags
  properties: {
    inputSchema: 'CloudEventSchemaV1_0'
    // The app publishes with its identity (EVENTS_TOPIC_KEY stays empty in Azure).
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

resource topic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: name
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(topic.id, appPrincipalId, eventGridDataSender)
  scope: topic
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventGridDataSender)
  }
  dependsOn: [
    created
  ]
}

output endpoint string = create ? created!.properties.endpoint : topic.properties.endpoint
