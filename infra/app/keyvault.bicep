metadata description = 'Key Vault (RBAC mode) holding TOKEN_SIGNING_KEY; the app reads it through a Key Vault reference with its user-assigned identity.'

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

@secure()
@minLength(32)
@description('Key that signs continuation tokens. Stored only in Key Vault; never an output.')
param tokenSigningKey string

param secretName string = 'token-signing-key'
param vnetEnabled bool = false

// Key Vault Secrets User: read secret values, nothing else.
var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
    }
  }
}

resource secret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: secretName
  properties: {
    value: tokenSigningKey
    contentType: 'text/plain'
  }
}

// Scoped to the one secret, not the vault.
resource secretReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(secret.id, appPrincipalId, keyVaultSecretsUser)
  scope: secret
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

output id string = vault.id
output name string = vault.name
// A reference, not the value: the platform resolves it at run time with the app's identity.
output tokenSigningKeyReference string = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${secret.name})'
