targetScope = 'subscription'

metadata description = 'Batch Output Index: a Flex Consumption Python function app that indexes Azure Batch output blobs (Batch File Conventions) from Event Grid into Table storage.'

// ---------------------------------------------------------------------------------------------
// Parameters
// ---------------------------------------------------------------------------------------------

@minLength(1)
@maxLength(64)
@description('Name of the azd environment; seeds resourceToken, so every resource name is unique to it.')
param environmentName string

@minLength(1)
@description('Region for the app and its resources (must offer Flex Consumption).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Resource group for the app; empty for rg-<environmentName>.')
param resourceGroupName string = ''

@description('Existing storage account Batch writes outputs to (the account linked to your Batch account). Empty to create a new one.')
param outputsStorageAccountName string = ''

@description('Resource group of that existing account; empty when it is in the app\'s resource group.')
param outputsStorageResourceGroupName string = ''

@description('Event Grid system topic on the outputs account. A storage account has at most one: if yours already has one, give its name to adopt it.')
param outputsSystemTopicName string = ''

@description('Create the Event Grid subscription to the index_blob_event function. Off until the code is deployed, because Event Grid refuses an AzureFunction endpoint whose function does not exist yet (the azd postdeploy hook turns it on).')
param eventSubscriptionEnabled bool = false

@secure()
@minLength(32)
@description('Key signing continuation tokens (TOKEN_SIGNING_KEY). Stored in Key Vault only; keep it stable across deployments (the azd preprovision hook generates it once).')
param tokenSigningKey string

@secure()
@description('Keys (comma-separated) that may post to the webhook POST /api/events and do nothing else (EVENTS_KEYS). Stored in Key Vault only. Empty: the webhook answers 401 to everyone; the deployed subscription delivers to the Event Grid trigger instead, which needs no key of ours.')
param eventsKeys string = ''

@description('Scheme and host clients reach the API at, e.g. https://outputs.contoso.com (PUBLIC_BASE_URL). nextLink is built from it; empty: nextLink is relative (/api/...). Never taken from a request\'s Host header.')
param publicBaseUrl string = ''

@description('Table holding the index (INDEX_TABLE).')
param indexTableName string = 'outputindex'

@minValue(1)
@maxValue(1440)
@description('Lifetime of download SAS URLs in minutes (SAS_TTL_MINUTES).')
param sasTtlMinutes int = 15

@minValue(0)
@description('Default per-job output count limit; 0 = none (QUOTA_MAX_OUTPUTS_PER_JOB).')
param quotaMaxOutputsPerJob int = 0

@minValue(0)
@description('Default per-job byte limit; 0 = none (QUOTA_MAX_BYTES_PER_JOB).')
param quotaMaxBytesPerJob int = 0

@minValue(0)
@description('Default per-task output count limit; 0 = none (QUOTA_MAX_OUTPUTS_PER_TASK).')
param quotaMaxOutputsPerTask int = 0

@description('Create an Event Grid custom topic for Batch.Outputs.QuotaExceeded events.')
param quotaEventsTopicEnabled bool = false

@description('Resource ID of an existing Event Grid custom topic for Batch.Outputs.QuotaExceeded events (instead of creating one).')
param existingQuotaEventsTopicId string = ''

@description('Example subscription on the events topic: the job whose TaskPreview outputs go to previewSubscriptionEndpoint (empty: none).')
param previewSubscriptionJobId string = ''

@description('Example subscription on the events topic: the webhook receiving that job\'s OutputCreated events for TaskPreview outputs.')
param previewSubscriptionEndpoint string = ''

@minValue(0)
@description('Retries per storage call (STORAGE_RETRY_TOTAL).')
param storageRetryTotal int = 6

@description('First retry backoff in seconds (STORAGE_RETRY_BACKOFF_SECONDS).')
param storageRetryBackoffSeconds string = '0.5'

@description('Longest retry backoff in seconds (STORAGE_RETRY_MAX_BACKOFF_SECONDS).')
param storageRetryMaxBackoffSeconds string = '8'

@minValue(1)
@description('Concurrent storage calls per instance (STORAGE_MAX_CONCURRENCY).')
param storageMaxConcurrency int = 16

@description('When the reconciler runs: NCRONTAB with seconds (RECONCILE_SCHEDULE).')
param reconcileSchedule string = '0 */15 * * * *'

@minValue(1)
@description('Jobs active within this many hours are reconciled blob by blob (RECONCILE_WINDOW_HOURS).')
param reconcileWindowHours int = 24

@description('How long the change feed keeps changes, in hours (older cursors answer 410 CursorExpired).')
@minValue(1)
param changeFeedRetentionHours int = 168

@description('How often one poll per job per instance looks for other instances\' changes for long-polling readers (seconds).')
param changeFeedPollSeconds string = '1'

@minValue(40)
@maxValue(1000)
@description('Flex Consumption scale-out limit.')
param maximumInstanceCount int = 100

@allowed([512, 2048, 4096])
@description('Flex Consumption instance memory size.')
param instanceMemoryMB int = 2048

@description('Outbound VNet integration for the app and private endpoints for app storage, Key Vault and the outputs account. Event Grid delivery keeps working: the app stays reachable for the AzureFunction endpoint, and dead-lettering uses the trusted-service path.')
param vnetEnabled bool = false

// ---------------------------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------------------------

var abbrs = loadJsonContent('./abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}

var functionAppName = '${abbrs.webSitesFunctions}${resourceToken}'
var appStorageName = '${abbrs.storageStorageAccounts}${resourceToken}'
var keyVaultName = '${abbrs.keyVaultVaults}${resourceToken}'
// Flex Consumption reads the app package from this container.
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'
var deadLetterContainerName = 'eventgrid-deadletter'

var createOutputsStorage = empty(outputsStorageAccountName)
var outputsAccountName = createOutputsStorage ? '${abbrs.storageStorageAccounts}out${resourceToken}' : outputsStorageAccountName
var outputsResourceGroupName = createOutputsStorage || empty(outputsStorageResourceGroupName) ? rg.name : outputsStorageResourceGroupName
var systemTopicName = !empty(outputsSystemTopicName) ? outputsSystemTopicName : '${abbrs.eventGridSystemTopics}${resourceToken}'

var useExistingQuotaTopic = !empty(existingQuotaEventsTopicId)
var quotaTopicEnabled = quotaEventsTopicEnabled || useExistingQuotaTopic

// ---------------------------------------------------------------------------------------------
// Resources
// ---------------------------------------------------------------------------------------------

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: '${abbrs.managedIdentityUserAssignedIdentities}api-${resourceToken}'
    location: location
    tags: tags
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: '${abbrs.operationalInsightsWorkspaces}${resourceToken}'
    applicationInsightsName: '${abbrs.insightsComponents}${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: appStorageName
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    indexTableName: indexTableName
    deadLetterContainerName: deadLetterContainerName
    vnetEnabled: vnetEnabled
  }
}

module outputsStorage 'app/outputs-storage.bicep' = if (createOutputsStorage) {
  name: 'outputs-storage'
  scope: rg
  params: {
    name: outputsAccountName
    location: location
    tags: tags
  }
}

module outputsAccess 'app/outputs-access.bicep' = {
  name: 'outputs-access-${resourceToken}'
  scope: resourceGroup(outputsResourceGroupName)
  params: {
    storageAccountName: outputsAccountName
    appPrincipalId: identity.outputs.principalId
    systemTopicName: systemTopicName
    tags: tags
  }
  dependsOn: [
    outputsStorage
  ]
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: keyVaultName
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    tokenSigningKey: tokenSigningKey
    eventsKeys: eventsKeys
    eventsKeysEnabled: !empty(eventsKeys)
    vnetEnabled: vnetEnabled
  }
}

module quotaEventsTopic 'app/events-topic.bicep' = if (quotaTopicEnabled) {
  name: 'quota-events-topic-${resourceToken}'
  scope: resourceGroup(
    useExistingQuotaTopic ? split(existingQuotaEventsTopicId, '/')[2] : subscription().subscriptionId,
    useExistingQuotaTopic ? split(existingQuotaEventsTopicId, '/')[4] : rg.name
  )
  params: {
    name: useExistingQuotaTopic ? last(split(existingQuotaEventsTopicId, '/')) : '${abbrs.eventGridTopics}quota-${resourceToken}'
    create: !useExistingQuotaTopic
    location: location
    tags: tags
    appPrincipalId: identity.outputs.principalId
    previewSubscriptionJobId: previewSubscriptionJobId
    previewSubscriptionEndpoint: previewSubscriptionEndpoint
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    deadLetterContainerName: storage.outputs.deadLetterContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appPrincipalId: identity.outputs.principalId
    systemTopicPrincipalId: outputsAccess.outputs.systemTopicPrincipalId
  }
}

module vnet 'app/vnet.bicep' = if (vnetEnabled) {
  name: 'vnet'
  scope: rg
  params: {
    name: '${abbrs.networkVirtualNetworks}${resourceToken}'
    location: location
    tags: tags
  }
}

// Names and IDs here are known at the start of the deployment, as a module loop requires.
var privateEndpoints = vnetEnabled ? [
  {
    name: 'blob-${appStorageName}'
    target: resourceId(subscription().subscriptionId, rg.name, 'Microsoft.Storage/storageAccounts', appStorageName)
    groupId: 'blob'
  }
  {
    name: 'table-${appStorageName}'
    target: resourceId(subscription().subscriptionId, rg.name, 'Microsoft.Storage/storageAccounts', appStorageName)
    groupId: 'table'
  }
  {
    name: 'vault-${keyVaultName}'
    target: resourceId(subscription().subscriptionId, rg.name, 'Microsoft.KeyVault/vaults', keyVaultName)
    groupId: 'vault'
  }
  {
    name: 'blob-${outputsAccountName}'
    target: resourceId(subscription().subscriptionId, outputsResourceGroupName, 'Microsoft.Storage/storageAccounts', outputsAccountName)
    groupId: 'blob'
  }
] : []

module privateEndpoint 'app/private-endpoint.bicep' = [
  for endpoint in privateEndpoints: {
    name: 'pep-${endpoint.name}'
    scope: rg
    params: {
      name: '${abbrs.networkPrivateEndpoints}${endpoint.name}'
      location: location
      tags: tags
      targetResourceId: endpoint.target
      groupId: endpoint.groupId
      dnsZoneId: vnet!.outputs.dnsZoneIds[endpoint.groupId]
      subnetId: vnet!.outputs.privateEndpointSubnetId
    }
    dependsOn: [
      storage
      keyVault
      outputsAccess
    ]
  }
]

// Every app setting the code reads (shared/settings.py SETTING_NAMES), except the local-only
// ones: OUTPUTS_STORAGE / INDEX_STORAGE connection strings (identity-based here), API_KEYS
// (the Functions host checks function keys on the API) and EVENTS_TOPIC_KEY (the identity
// publishes). EVENTS_KEYS guards the webhook function, which the host does not key-check:
// a Key Vault reference when keys are given, else empty (the webhook then refuses everyone).
var appSettings = {
  OUTPUTS_STORAGE__blobServiceUri: outputsAccess.outputs.blobEndpoint
  OUTPUTS_STORAGE__credential: 'managedidentity'
  OUTPUTS_STORAGE__clientId: identity.outputs.clientId
  INDEX_STORAGE__tableServiceUri: storage.outputs.tableEndpoint
  // The same account holds the dead-letter container (replay-deadletters reads it).
  INDEX_STORAGE__blobServiceUri: storage.outputs.blobEndpoint
  INDEX_STORAGE__credential: 'managedidentity'
  INDEX_STORAGE__clientId: identity.outputs.clientId
  INDEX_TABLE: storage.outputs.indexTableName
  TOKEN_SIGNING_KEY: keyVault.outputs.tokenSigningKeyReference
  EVENTS_KEYS: keyVault.outputs.eventsKeysReference
  PUBLIC_BASE_URL: publicBaseUrl
  SAS_TTL_MINUTES: string(sasTtlMinutes)
  QUOTA_MAX_OUTPUTS_PER_JOB: string(quotaMaxOutputsPerJob)
  QUOTA_MAX_BYTES_PER_JOB: string(quotaMaxBytesPerJob)
  QUOTA_MAX_OUTPUTS_PER_TASK: string(quotaMaxOutputsPerTask)
  EVENTS_TOPIC_ENDPOINT: quotaTopicEnabled ? quotaEventsTopic!.outputs.endpoint : ''
  STORAGE_RETRY_TOTAL: string(storageRetryTotal)
  STORAGE_RETRY_BACKOFF_SECONDS: storageRetryBackoffSeconds
  STORAGE_RETRY_MAX_BACKOFF_SECONDS: storageRetryMaxBackoffSeconds
  STORAGE_MAX_CONCURRENCY: string(storageMaxConcurrency)
  RECONCILE_SCHEDULE: reconcileSchedule
  RECONCILE_WINDOW_HOURS: string(reconcileWindowHours)
  // Where the subscription dead-letters (eventSubscription below): replay-deadletters reads it.
  DEADLETTER_CONTAINER: storage.outputs.deadLetterContainerName
  CHANGE_FEED_RETENTION_HOURS: string(changeFeedRetentionHours)
  CHANGE_FEED_POLL_SECONDS: changeFeedPollSeconds
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    appSettings: appSettings
    virtualNetworkSubnetId: vnetEnabled ? vnet!.outputs.appSubnetId : ''
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
  }
  // The app starts resolving its identity-based connections and the Key Vault reference at once.
  dependsOn: [
    rbac
    privateEndpoint
  ]
}

module eventSubscription 'app/eventgrid-subscription.bicep' = if (eventSubscriptionEnabled) {
  name: 'eventgrid-subscription-${resourceToken}'
  scope: resourceGroup(outputsResourceGroupName)
  params: {
    systemTopicName: outputsAccess.outputs.systemTopicName
    functionAppId: api.outputs.id
    deadLetterStorageAccountId: storage.outputs.id
    deadLetterContainerName: storage.outputs.deadLetterContainerName
  }
  // Dead-lettering needs the topic's role on the container before the first failure.
  dependsOn: [
    rbac
  ]
}

// ---------------------------------------------------------------------------------------------
// Outputs (azd writes them to the environment). Names and endpoints only: no keys, no secrets.
// ---------------------------------------------------------------------------------------------

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output SERVICE_API_URI string = api.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_OUTPUTS_STORAGE_ACCOUNT_NAME string = outputsAccountName
output AZURE_OUTPUTS_STORAGE_RESOURCE_GROUP string = outputsResourceGroupName
output AZURE_INDEX_TABLE_NAME string = storage.outputs.indexTableName
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_EVENTGRID_SYSTEM_TOPIC_NAME string = outputsAccess.outputs.systemTopicName
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.outputs.clientId
