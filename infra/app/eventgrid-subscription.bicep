metadata description = 'The Event Grid subscription on the outputs account\'s system topic: BlobCreated and BlobDeleted under job-* containers, delivered to the index_blob_event function one event at a time, with retries and dead-lettering. Deploy only once the function exists (see the postdeploy hook).'

param systemTopicName string

@description('Resource ID of the function app.')
param functionAppId string

@description('The Event Grid trigger function registered by function_app.py.')
param functionName string = 'index_blob_event'

@description('Resource ID of the storage account that receives dead letters.')
param deadLetterStorageAccountId string
param deadLetterContainerName string

param subscriptionName string = 'index-batch-outputs'

@minValue(1)
@maxValue(30)
param maxDeliveryAttempts int = 30

@minValue(1)
@maxValue(1440)
param eventTimeToLiveInMinutes int = 1440

resource systemTopic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: systemTopicName
}

// Batch size: the Functions extension runs a delivered batch as concurrent single-event
// invocations and the app's group commit (shared/ingest/group_commit.py) joins them into shared
// batch transactions. 100 events: one Table transaction holds at most 100 entities, and a
// failed invocation makes Event Grid redeliver the whole batch, so a batch much larger only
// widens that redelivery. A BlobCreated event is about 1 KB: 128 KB holds 100.
resource eventSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: systemTopic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/${functionName}'
        // Batches of 100 events (one Table transaction's worth): see above.
        maxEventsPerBatch: 100
        preferredBatchSizeInKilobytes: 128
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.Storage.BlobCreated'
        'Microsoft.Storage.BlobDeleted'
        // Data Lake Storage Gen2 (hierarchical namespace) accounts: a rename or a recursive
        // directory delete is one event for many blobs, never a BlobDeleted per blob.
        'Microsoft.Storage.BlobRenamed'
        'Microsoft.Storage.DirectoryRenamed'
        'Microsoft.Storage.DirectoryDeleted'
      ]
      // Batch File Conventions containers are named job-...; everything else is not ours.
      subjectBeginsWith: '/blobServices/default/containers/job-'
      isSubjectCaseSensitive: false
    }
    // At-least-once with exponential backoff; the trigger raises on a transient storage
    // failure so the event comes back, and what never succeeds lands in the dead-letter container.
    retryPolicy: {
      maxDeliveryAttempts: maxDeliveryAttempts
      eventTimeToLiveInMinutes: eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: deadLetterStorageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = eventSubscription.name
