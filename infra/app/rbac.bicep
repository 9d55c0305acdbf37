metadata description = 'Role assignments in the app resource group, by built-in role definition ID with deterministic guid() names.'

param storageAccountName string
param deadLetterContainerName string

@description('Containers of the app account the app writes: the deployment package, the host\'s own containers (azure-webjobs-hosts, azure-webjobs-secrets) and the dead-letter container.')
param appContainerNames array
param applicationInsightsName string

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Principal ID of the Event Grid system topic\'s identity, which writes dead letters.')
param systemTopicPrincipalId string

// Built-in role definition IDs (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName

  resource blobServices 'blobServices' existing = {
    name: 'default'

    resource deadLetterContainer 'containers' existing = {
      name: deadLetterContainerName
    }
  }
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource appContainers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = [
  for container in appContainerNames: {
    parent: storage::blobServices
    name: container
  }
]

// Least privilege on blobs: Blob Data Contributor on each container the app uses, not Owner on
// the account. Flex Consumption reads (and OneDeploy writes) the package in the deployment
// container; the host keeps its leases (the timer's singleton lock) in azure-webjobs-hosts and
// its keys in azure-webjobs-secrets; replay-deadletters reads the dead-letter container and
// marks what it replayed (metadata replayedAt). No queue role: no function uses queues.
resource appBlob 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for (container, i) in appContainerNames: {
    name: guid(storage.id, container, appPrincipalId, roles.storageBlobDataContributor)
    scope: appContainers[i]
    properties: {
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    }
  }
]

// The index table (INDEX_STORAGE) and the host's diagnostic-events tables (named by month, so
// they cannot be scoped ahead) are this account's only tables.
resource indexTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, appPrincipalId, roles.storageTableDataContributor)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
  }
}

// Application Insights has local auth off: telemetry needs this role.
resource metricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Event Grid dead-letters with the system topic's identity, on this one container only.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::blobServices::deadLetterContainer.id, systemTopicPrincipalId, roles.storageBlobDataContributor)
  scope: storage::blobServices::deadLetterContainer
  properties: {
    principalId: systemTopicPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}
