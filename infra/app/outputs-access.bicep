metadata description = 'Deployed into the resource group of the Batch outputs account (new or existing): read and user-delegation roles for the app identity, and the Event Grid system topic on the account.'

@description('Name of the storage account Batch writes outputs to.')
param storageAccountName string

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Name of the Event Grid system topic. A storage account can have only one system topic: give the existing topic\'s name to adopt it.')
param systemTopicName string

param tags object = {}

@description('Resource ID of the Log Analytics workspace for the account\'s blob logs and the topic\'s delivery failures.')
param logAnalyticsWorkspaceId string

// Built-in role definition IDs (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var storageBlobDataReader = '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
// Needed to request the user delegation key that signs downloadUrl SAS tokens.
var storageBlobDelegator = 'db58b8e5-c6ad-4a2a-8342-4190687cbf4a'

resource outputsAccount 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Account scope, not container scope: Batch creates one container per job, at run time.
resource blobReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputsAccount.id, appPrincipalId, storageBlobDataReader)
  scope: outputsAccount
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDataReader)
  }
}

resource blobDelegator 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(outputsAccount.id, appPrincipalId, storageBlobDelegator)
  scope: outputsAccount
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', storageBlobDelegator)
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' = {
  name: systemTopicName
  // A system topic lives where its source lives.
  location: outputsAccount.location
  tags: tags
  identity: {
    // Used by the subscription to write dead letters; holds no other role.
    type: 'SystemAssigned'
  }
  properties: {
    source: outputsAccount.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource outputsBlobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: outputsAccount
  name: 'default'
}

// Who read, wrote or deleted which output (new or adopted account alike).
resource outputsBlobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'batch-output-index-to-log-analytics'
  scope: outputsBlobServices
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'StorageRead', enabled: true }
      { category: 'StorageWrite', enabled: true }
      { category: 'StorageDelete', enabled: true }
    ]
    metrics: [
      { category: 'Transaction', enabled: true }
    ]
  }
}

// Events Event Grid could not deliver (and dead-lettered): the first place to look when an
// output is missing from the index.
resource systemTopicDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: systemTopic
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { category: 'DeliveryFailures', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output storageAccountId string = outputsAccount.id
output blobEndpoint string = outputsAccount.properties.primaryEndpoints.blob
output systemTopicName string = systemTopic.name
output systemTopicPrincipalId string = systemTopic.identity.principalId
