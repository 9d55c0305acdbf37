metadata description = 'A new storage account for Batch outputs, used only when no existing account is given. Shared-key access and public blob access off.'

param name string
param location string = resourceGroup().location
param tags object = {}

resource outputs 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    // Batch tasks then upload with a managed identity (OutputFile identityReference) or a
    // user-delegation SAS; account-key SAS stops working, which is the point.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Left reachable: Batch compute nodes write here from wherever their pool runs. With
    // vnetEnabled the app still reads it through a private endpoint; close the public side
    // once the pool has its own private path.
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

output name string = outputs.name
output id string = outputs.id
