// Storage for the Functions host (keys, timer leases, deployment package) and for PatchPilot's own queues and
// tables. Keyless: shared-key access is disabled, so every client (host, app, azd deploy) authenticates with Entra ID.
param name string
param location string = resourceGroup().location
param tags object = {}
param deploymentContainerName string
@description('Queues to pre-create, each trigger queue with its "-poison" queue (the host moves a message there after maxDequeueCount).')
param queueNames array
param tableNames array

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_59:Flex Consumption without VNet integration reaches storage over its public endpoint; access is Entra-only (no keys, no anonymous blobs). Add a VNet + private endpoints to close it.
  // checkov:skip=CKV_AZURE_35:Same reason as CKV_AZURE_59: default-deny needs VNet integration and private endpoints, which this template does not deploy.
  // checkov:skip=CKV_AZURE_206:LRS is deliberate: queues and tables hold in-flight run state only; ARM remains the source of truth for the VMs.
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
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    dnsEndpointType: 'Standard'
    minimumTlsVersion: 'TLS1_2'
    publicNetworkAccess: 'Enabled'
    supportsHttpsTrafficOnly: true
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

// Child resources are top-level with `parent` (pycep, which checkov uses, keeps only one nested child).
resource blobServices 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

// Flex Consumption reads the app package from here (functionAppConfig.deployment.storage).
resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobServices
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource queueServices 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource tableServices 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

// The app also creates these on first use; declaring them means the queue triggers (and their poison
// handlers) find their queues on the first cold start instead of logging "queue does not exist".
resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueServices
  name: queueName
}]

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for tableName in tableNames: {
  parent: tableServices
  name: tableName
}]

output name string = storage.name
output resourceId string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output queueEndpoint string = storage.properties.primaryEndpoints.queue
output tableEndpoint string = storage.properties.primaryEndpoints.table
