metadata description = 'Optional custom topic for the app\'s CloudEvents (Batch.Outputs.QuotaExceeded, OutputCreated, OutputDeleted; new or existing), with EventGrid Data Sender for the app identity. Local (key) auth off on a new topic. Optionally, an example subscription: one job\'s TaskPreview outputs to a webhook.'

param name string

@description('Create the topic (true) or use an existing one of that name in this resource group (false).')
param create bool

param location string = resourceGroup().location
param tags object = {}

@description('Principal ID of the function app\'s user-assigned identity.')
param appPrincipalId string

@description('Example subscription: the job whose TaskPreview outputs are delivered (empty: no subscription).')
param previewSubscriptionJobId string = ''

@description('Example subscription: the webhook that receives them (https; it must answer the CloudEvents validation handshake).')
param previewSubscriptionEndpoint string = ''

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

// An example of what subscribers do: one job's new TaskPreview outputs, delivered as CloudEvents.
// Subjects are /jobs/{jobId}/tasks/{taskId}/kinds/{kind}/outputs/{path}, so subjectBeginsWith
// picks a job (or one task's kind: /jobs/{jobId}/tasks/{taskId}/kinds/TaskPreview/); the kind of
// every task of the job is an advanced filter on the event's data.
resource previewSubscription 'Microsoft.EventGrid/topics/eventSubscriptions@2025-02-15' = if (!empty(previewSubscriptionJobId) && !empty(previewSubscriptionEndpoint)) {
  parent: topic
  name: 'task-previews-${take(uniqueString(previewSubscriptionJobId), 8)}'
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: previewSubscriptionEndpoint
      }
    }
    eventDeliverySchema: 'CloudEventSchemaV1_0'
    filter: {
      includedEventTypes: [
        'Batch.Outputs.OutputCreated'
      ]
      subjectBeginsWith: '/jobs/${previewSubscriptionJobId}/tasks/'
      advancedFilters: [
        {
          operatorType: 'StringIn'
          key: 'data.output.kind'
          values: [
            'TaskPreview'
          ]
        }
      ]
    }
  }
  dependsOn: [
    created
  ]
}

output endpoint string = create ? created!.properties.endpoint : topic.properties.endpoint
