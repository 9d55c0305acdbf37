metadata description = 'A new storage account for Batch outputs, used only when no existing account is given. Shared-key access and public blob access off.'

param name string
param location string = resourceGroup().location
param tags object = {}

@description('When true, the account takes traffic only through private endpoints and trusted Azure services, unless publicNetworkAccessEnabled.')
param vnetEnabled bool = false

@description('Keep the public endpoint open even with vnetEnabled: Batch pools without a private path to the account write their outputs through it.')
param publicNetworkAccessEnabled bool = false

@allowed(['Standard_ZRS', 'Standard_LRS', 'Standard_GZRS', 'Standard_RAGZRS'])
@description('Redundancy: zone-redundant by default; Standard_LRS only in a region without availability zones.')
param skuName string = 'Standard_ZRS'

resource outputs 'Microsoft.Storage/storageAccounts@2023-05-01' = {
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
    // Batch tasks then upload with a managed identity (OutputFile identityReference) or a
    // user-delegation SAS; account-key SAS stops working, which is the point.
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    // Closed with vnetEnabled: the app reads it through a private endpoint, and the Batch
    // pool must have its own private path (or the operator opens it by parameter).
    publicNetworkAccess: vnetEnabled && !publicNetworkAccessEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled && !publicNetworkAccessEnabled ? 'Deny' : 'Allow'
    }
  }
}

output name string = outputs.name
output id string = outputs.id
