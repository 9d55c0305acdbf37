metadata description = 'The app storage account: Functions host data, the deployment package container, the index table and the Event Grid dead-letter container. Shared-key access off.'

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Blob container Flex Consumption deploys the app package to.')
param deploymentContainerName string

@description('Table holding the output index (app setting INDEX_TABLE).')
param indexTableName string

@description('Blob container Event Grid dead-letters undeliverable events to.')
param deadLetterContainerName string

@description('When true, the account takes traffic only through private endpoints (and trusted Azure services, which Event Grid dead-lettering relies on).')
param vnetEnabled bool = false

@allowed(['Standard_ZRS', 'Standard_LRS', 'Standard_GZRS', 'Standard_RAGZRS'])
@description('Redundancy: zone-redundant by default; Standard_LRS only in a region without availability zones.')
param skuName string = 'Standard_ZRS'

@description('Resource ID of the Log Analytics workspace the blob and table services send their logs to.')
param logAnalyticsWorkspaceId string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: skuName
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    // Every client (host, index, deployment, Event Grid dead-lettering) uses Entra ID.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      // Event Grid writes dead letters with its managed identity as a trusted service, so it
      // still gets in when the account is closed to the public network.
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }

  resource blobServices 'blobServices' = {
    name: 'default'
    properties: {
      deleteRetentionPolicy: {
        enabled: true
        days: 7
      }
    }

    resource deploymentContainer 'containers' = {
      name: deploymentContainerName
      properties: {
        publicAccess: 'None'
      }
    }

    resource deadLetterContainer 'containers' = {
      name: deadLetterContainerName
      properties: {
        publicAccess: 'None'
      }
    }

    // The Functions host's own containers (leases of the timer's singleton lock and host ID,
    // and its keys), declared here so the app's blob role is scoped to them, not the account.
    resource hostsContainer 'containers' = {
      name: 'azure-webjobs-hosts'
      properties: {
        publicAccess: 'None'
      }
    }

    resource secretsContainer 'containers' = {
      name: 'azure-webjobs-secrets'
      properties: {
        publicAccess: 'None'
      }
    }
  }

  resource tableServices 'tableServices' = {
    name: 'default'

    resource indexTable 'tables' = {
      name: indexTableName
    }
  }
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output tableEndpoint string = storage.properties.primaryEndpoints.table
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output deadLetterContainerName string = storage::blobServices::deadLetterContainer.name
output deploymentContainerName string = storage::blobServices::deploymentContainer.name
output hostContainerNames array = [
  storage::blobServices::hostsContainer.name
  storage::blobServices::secretsContainer.name
]
output indexTableName string = storage::tableServices::indexTable.name

// Who read, wrote or deleted what (the index, the host's blobs, the dead letters).
resource blobDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::blobServices
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

resource tableDiagnostics 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: storage::tableServices
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
