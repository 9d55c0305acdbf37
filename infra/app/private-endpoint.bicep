metadata description = 'One private endpoint for one sub-resource (blob, table, vault, ...), registered in its private DNS zone.'

param name string
param location string = resourceGroup().location
param tags object = {}

@description('Resource ID of the resource the endpoint connects to.')
param targetResourceId string

@description('Private link sub-resource: blob, table, queue, vault.')
param groupId string

@description('Resource ID of the private DNS zone for this sub-resource (see vnet.bicep).')
param dnsZoneId string

param subnetId string

resource endpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    subnet: {
      id: subnetId
    }
    privateLinkServiceConnections: [
      {
        name: name
        properties: {
          privateLinkServiceId: targetResourceId
          groupIds: [
            groupId
          ]
        }
      }
    ]
  }
}

resource dnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: endpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: groupId
        properties: {
          privateDnsZoneId: dnsZoneId
        }
      }
    ]
  }
}
