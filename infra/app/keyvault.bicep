metadata description = 'Key Vault (RBAC mode, purge protection, 90-day soft delete, audit logs) holding TOKEN_SIGNING_KEY and the keys by role given (API_KEYS, READ_KEYS, EVENTS_KEYS); the app reads them through Key Vault references with its user-assigned identity.'

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

@secure()
@minLength(32)
@description('Key that signs continuation tokens. Stored only in Key Vault; never an output.')
param tokenSigningKey string

@secure()
@description('Keys that may post events to the webhook (EVENTS_KEYS); empty for none. Stored only in Key Vault; never an output.')
param eventsKeys string = ''

@description('Whether eventsKeys holds keys (a plain flag, so outputs need not touch the secure value).')
param eventsKeysEnabled bool = false

@secure()
@description('Admin keys (API_KEYS); empty for none. Stored only in Key Vault; never an output.')
param apiKeys string = ''

@description('Whether apiKeys holds keys.')
param apiKeysEnabled bool = false

@secure()
@description('Reader keys (READ_KEYS); empty for none. Stored only in Key Vault; never an output.')
param readKeys string = ''

@description('Whether readKeys holds keys.')
param readKeysEnabled bool = false

@description('Resource ID of the Log Analytics workspace the vault\'s audit log goes to.')
param logAnalyticsWorkspaceId string

param secretName string = 'token-signing-key'
param eventsKeysSecretName string = 'events-keys'
param apiKeysSecretName string = 'api-keys'
param readKeysSecretName string = 'read-keys'
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
    softDeleteRetentionInDays: 90
    // A deleted vault or secret cannot be purged before its retention ends (nor the signing key lost).
    enablePurgeProtection: true
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

resource eventsKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (eventsKeysEnabled) {
  parent: vault
  name: eventsKeysSecretName
  properties: {
    value: eventsKeys
    contentType: 'text/plain'
  }
}

resource eventsKeysReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (eventsKeysEnabled) {
  name: guid(vault.id, eventsKeysSecretName, appPrincipalId, keyVaultSecretsUser)
  scope: eventsKeysSecret
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource apiKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (apiKeysEnabled) {
  parent: vault
  name: apiKeysSecretName
  properties: {
    value: apiKeys
    contentType: 'text/plain'
  }
}

resource apiKeysReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (apiKeysEnabled) {
  name: guid(vault.id, apiKeysSecretName, appPrincipalId, keyVaultSecretsUser)
  scope: apiKeysSecret
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource readKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (readKeysEnabled) {
  parent: vault
  name: readKeysSecretName
  properties: {
    value: readKeys
    contentType: 'text/plain'
  }
}

resource readKeysReader 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (readKeysEnabled) {
  name: guid(vault.id, readKeysSecretName, appPrincipalId, keyVaultSecretsUser)
  scope: readKeysSecret
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

// Every read of a secret, every change of the vault: who, when, from where.
resource auditLog 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: vault
  properties: {
    workspaceId: logAnalyticsWorkspaceId
    logs: [
      { categoryGroup: 'audit', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

output id string = vault.id
output name string = vault.name
// A reference, not the value: the platform resolves it at run time with the app's identity.
output tokenSigningKeyReference string = '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${secret.name})'
// Empty when no events keys are given: an unresolvable reference would read as a literal key.
output eventsKeysReference string = !eventsKeysEnabled ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${eventsKeysSecretName})'
output apiKeysReference string = !apiKeysEnabled ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${apiKeysSecretName})'
output readKeysReference string = !readKeysEnabled ? '' : '@Microsoft.KeyVault(VaultName=${vault.name};SecretName=${readKeysSecretName})'
