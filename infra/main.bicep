// PatchPilot on Azure: one resource group with a Flex Consumption Function App, its storage, monitoring and
// one user-assigned identity; plus a custom "VM Patch Operator" role assigned on each target scope, and a custom
// "Operation Status Reader" role at the subscription of each resource-group target (polling and the alerts list
// need it there).
// Plain resource declarations instead of br/public AVM modules so `az bicep build` and the offline checks
// (tests/infra) work without registry access; the shapes follow the AVM / Azure-Samples Flex templates.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds the resource token and the resource group name.')
param environmentName string

@minLength(1)
@description('Region for all resources; it must offer Flex Consumption (az functionapp list-flexconsumption-locations).')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Subscription ids (/subscriptions/<id>) and resource group ids (/subscriptions/<id>/resourceGroups/<name>) whose VMs PatchPilot may patch.')
param patchTargetScopes array = []

@description('Optional: object id of a person who may read the queues and tables for debugging (azd sets AZURE_PRINCIPAL_ID).')
param principalId string = ''

@description('Resource Manager endpoint the app calls; the cloud this is deployed to unless overridden.')
param armEndpoint string = environment().resourceManager

@description('Compute REST API version for VM, installPatches and assessPatches calls.')
param computeApiVersion string = '2025-04-01'

@description('HybridCompute REST API version for Azure Arc-enabled server (machines) calls: list, GET, installPatches, assessPatches.')
param hybridComputeApiVersion string = '2024-07-10'

@description('NCRONTAB schedule of the sweeper timer (six fields, UTC).')
param sweepSchedule string = '0 * * * * *'

@description('NCRONTAB schedule of the periodic assessment (six fields, UTC). Azure assesses daily; so do we.')
param assessmentSchedule string = '0 0 3 * * *'

@description('Webhook URLs (comma-separated, https) that receive PatchPilot events; empty for none.')
param eventWebhooks string = ''

@description('Event format for the webhooks: CloudEvents (1.0 JSON) or EventGrid (an Event Grid topic or a Logic App).')
@allowed(['CloudEvents', 'EventGrid'])
param eventSchema string = 'CloudEvents'

@secure()
@description('Key for the HMAC-SHA256 signature on every event and hook call (X-PatchPilot-Signature).')
param eventSigningKey string = ''

@minValue(1)
@description('Days of assessment history kept per machine (pruned as new results arrive).')
param assessmentRetentionDays int = 90

@minValue(1)
@description('Hours after which a machine\'s latest assessment counts as stale in the compliance view.')
param assessmentFreshnessHours int = 36

@minValue(1)
param maxMachinesPerRun int = 10000

@description('Floor (seconds) between polls of a VM operation; 60 keeps 1,000 VMs under ARM\'s read rate limit.')
param pollMinSeconds int = 0

@minValue(1)
@description('Retry-After (seconds) on 202 answers for unfinished runs.')
param runRetryAfterSeconds int = 20

@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Client id of an Entra app registration that signs people in to the dashboard (App Service Authentication). Empty: off; the dashboard then asks for a function key only.')
param dashboardAuthClientId string = ''

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = '${abbrs.webSitesFunctions}api-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(toLower(uniqueString(functionAppName, resourceToken)), 7)}'

// Queue and table names: one place for storage (pre-created) and app settings (read by the code).
var dispatchQueue = 'patch-dispatch'
var operationsQueue = 'patch-operations'
var pollsQueue = 'patch-polls'
var runsTable = 'patchruns'
var targetsTable = 'patchtargets'
var patchesTable = 'patchdetails'
var discoveryQueue = 'patch-discovery'
var machinesTable = 'patchmachines'
var assessmentsTable = 'patchassessments'
var maintenanceTable = 'patchmaintenance'
var eventsQueue = 'patch-events'

// environment().resourceManager ends with "/"; the app wants scheme://host.
var armEndpointTrimmed = endsWith(armEndpoint, '/') ? substring(armEndpoint, 0, length(armEndpoint) - 1) : armEndpoint

// Target scopes, split by kind: "/subscriptions/<id>" has 3 segments, ".../resourceGroups/<name>" has 5.
var subscriptionTargets = filter(patchTargetScopes, s => length(split(s, '/')) == 3)
var resourceGroupTargets = filter(patchTargetScopes, s => length(split(s, '/')) == 5)
var unrecognisedTargets = filter(patchTargetScopes, s => length(split(s, '/')) != 3 && length(split(s, '/')) != 5)
// Role definitions are tenant-wide: the GUID name and the role name must both be unique in the tenant. Seeding
// them with the deployment subscription and the environment keeps two azd environments of the same name (in
// other subscriptions of one tenant) apart; resourceToken carries the subscription into the role name.
var patchRoleName = 'PatchPilot VM Patch Operator (${environmentName}, ${resourceToken})'
var patchRoleDefinitionName = guid(subscription().id, environmentName, 'patchpilot-vm-patch-operator')
// The operation status URL and the alerts list lie under the subscription, outside any resource group: a
// resource-group target's role cannot reach them, so its subscription gets this role (only
// Microsoft.Compute/locations/operations/read, Microsoft.HybridCompute/locations/updateCenterOperationResults/read
// and Microsoft.AlertsManagement/alerts/read).
var pollRoleName = 'PatchPilot Operation Status Reader (${environmentName}, ${resourceToken})'
var pollRoleDefinitionName = guid(subscription().id, environmentName, 'patchpilot-operation-status-reader')
// Subscription ids of the resource-group targets, each once (union drops duplicates).
var resourceGroupTargetSubscriptionIds = [for s in resourceGroupTargets: toLower(split(s, '/')[2])]
var pollSubscriptionIds = union(resourceGroupTargetSubscriptionIds, [])
var pollScopes = [for id in pollSubscriptionIds: '/subscriptions/${id}']

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: '${abbrs.resourcesResourceGroups}${environmentName}'
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

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: '${abbrs.storageStorageAccounts}${resourceToken}'
    location: location
    tags: tags
    deploymentContainerName: deploymentContainerName
    // The trigger queues and the "-poison" queues the host moves failed messages to.
    queueNames: [
      dispatchQueue
      '${dispatchQueue}-poison'
      operationsQueue
      '${operationsQueue}-poison'
      pollsQueue
      '${pollsQueue}-poison'
      discoveryQueue
      '${discoveryQueue}-poison'
      eventsQueue
      '${eventsQueue}-poison'
    ]
    tableNames: [
      runsTable
      targetsTable
      patchesTable
      machinesTable
      assessmentsTable
      maintenanceTable
    ]
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

// Every setting shared/core/settings.py and the trigger bindings (%NAME%) read; tests/infra checks this list
// against the code. Tuning knobs left at their code defaults are listed, with reasons, in that test.
var appSettings = {
  ARM_ENDPOINT: armEndpointTrimmed
  COMPUTE_API_VERSION: computeApiVersion
  HYBRIDCOMPUTE_API_VERSION: hybridComputeApiVersion
  AZURE_CLIENT_ID: identity.outputs.clientId
  DISPATCH_QUEUE: dispatchQueue
  OPERATIONS_QUEUE: operationsQueue
  POLLS_QUEUE: pollsQueue
  RUNS_TABLE: runsTable
  TARGETS_TABLE: targetsTable
  PATCHES_TABLE: patchesTable
  SWEEP_SCHEDULE: sweepSchedule
  MAX_MACHINES_PER_RUN: string(maxMachinesPerRun)
  POLL_MIN_SECONDS: string(pollMinSeconds)
  RUN_RETRY_AFTER_SECONDS: string(runRetryAfterSeconds)
  DISCOVERY_QUEUE: discoveryQueue
  MACHINES_TABLE: machinesTable
  ASSESSMENTS_TABLE: assessmentsTable
  ASSESSMENT_SCHEDULE: assessmentSchedule
  // The periodic assessment covers exactly the scopes the identity was granted (the app drops a resource
  // group that a listed subscription already covers).
  ASSESSMENT_SCOPES: join(concat(subscriptionTargets, resourceGroupTargets), ',')
  ASSESSMENT_RETENTION_DAYS: string(assessmentRetentionDays)
  ASSESSMENT_FRESHNESS_HOURS: string(assessmentFreshnessHours)
  MAINTENANCE_TABLE: maintenanceTable
  // Every minute: a window opens within a minute of its start.
  MAINTENANCE_SCHEDULE: '0 * * * * *'
  EVENTS_QUEUE: eventsQueue
  EVENT_WEBHOOKS: eventWebhooks
  EVENT_SCHEMA: eventSchema
  EVENT_SIGNING_KEY: eventSigningKey
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: '${abbrs.webServerFarms}${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    appSettings: appSettings
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    dashboardAuthClientId: dashboardAuthClientId
    keyOnlyPaths: [
      '/api/runs'
      '/api/assessments'
      '/api/compliance'
      '/api/machines'
      '/api/maintenance-configurations'
      '/api/plans'
      '/api/openapi.json'
    ]
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    identityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

// The custom role lives in this subscription and is assignable on every target scope.
module patchRole 'app/patch-role.bicep' = if (!empty(patchTargetScopes)) {
  name: 'patch-role'
  params: {
    roleDefinitionName: patchRoleDefinitionName
    roleName: patchRoleName
    assignableScopes: patchTargetScopes
  }
}

module patchRoleOnSubscriptions 'app/patch-role-assignment-subscription.bicep' = [for target in subscriptionTargets: {
  name: 'patch-role-${uniqueString(target)}'
  scope: subscription(split(target, '/')[2])
  params: {
    roleDefinitionName: patchRoleDefinitionName
    principalId: identity.outputs.principalId
  }
  dependsOn: [
    patchRole
  ]
}]

module patchRoleOnResourceGroups 'app/patch-role-assignment-resource-group.bicep' = [for target in resourceGroupTargets: {
  name: 'patch-role-${uniqueString(target)}'
  scope: resourceGroup(split(target, '/')[2], split(target, '/')[4])
  params: {
    roleDefinitionName: patchRoleDefinitionName
    principalId: identity.outputs.principalId
  }
  dependsOn: [
    patchRole
  ]
}]

// The operation-status role, in this subscription, assignable on the subscription of each resource-group target.
module pollRole 'app/poll-role.bicep' = if (!empty(pollSubscriptionIds)) {
  name: 'poll-role'
  params: {
    roleDefinitionName: pollRoleDefinitionName
    roleName: pollRoleName
    assignableScopes: pollScopes
  }
}

module pollRoleOnSubscriptions 'app/poll-role-assignment-subscription.bicep' = [for subscriptionId in pollSubscriptionIds: {
  name: 'poll-role-${uniqueString(subscriptionId)}'
  scope: subscription(subscriptionId)
  params: {
    roleDefinitionName: pollRoleDefinitionName
    principalId: identity.outputs.principalId
  }
  dependsOn: [
    pollRole
  ]
}]

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_FUNCTION_URL string = '${api.outputs.uri}/api'
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output PATCHPILOT_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output PATCHPILOT_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output PATCHPILOT_ROLE_NAME string = patchRoleName
output PATCHPILOT_POLL_ROLE_NAME string = pollRoleName
// Entries of patchTargetScopes that are neither a subscription id nor a resource group id were not granted.
output PATCHPILOT_UNRECOGNISED_TARGET_SCOPES array = unrecognisedTargets
