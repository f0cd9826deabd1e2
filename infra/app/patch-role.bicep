// The custom role PatchPilot's identity holds on each target scope: exactly the ARM calls the app makes.
targetScope = 'subscription'

@description('Role definition name (a GUID) and role name; both are unique in the tenant, so they carry the azd environment name.')
param roleDefinitionName string
param roleName string
@description('Subscription and/or resource group ids the role may be assigned on (the target scopes).')
param assignableScopes array

resource patchOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionName
  properties: {
    roleName: roleName
    description: 'PatchPilot: read VMs and Arc-enabled servers, install and assess OS patches, follow the resulting long-running operations, read their health (Resource Health, fired alerts) afterwards.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          // GET .../virtualMachines/{vm} and listing VMs in a subscription or resource group
          'Microsoft.Compute/virtualMachines/read'
          // GET .../virtualMachines/{vm}/instanceView
          'Microsoft.Compute/virtualMachines/instanceView/read'
          // POST .../virtualMachines/{vm}/installPatches
          'Microsoft.Compute/virtualMachines/installPatches/action'
          // POST .../virtualMachines/{vm}/assessPatches
          'Microsoft.Compute/virtualMachines/assessPatches/action'
          // GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id} (LRO status)
          'Microsoft.Compute/locations/operations/read'
          // Azure Arc-enabled servers (HybridCompute.json): GET .../machines/{name} and listing machines in a
          // subscription or resource group
          'Microsoft.HybridCompute/machines/read'
          // POST .../machines/{name}/installPatches
          'Microsoft.HybridCompute/machines/installPatches/action'
          // POST .../machines/{name}/assessPatches
          'Microsoft.HybridCompute/machines/assessPatches/action'
          // GET /subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/updateCenterOperationResults/{id}
          // (the Location an Arc patch operation answers with; Azure Update Manager's permission table)
          'Microsoft.HybridCompute/locations/updateCenterOperationResults/read'
          // HybridCompute's newer answer: Azure-AsyncOperation to
          // GET /subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/operationstatus/{id} (the status)
          'Microsoft.HybridCompute/locations/operationstatus/read'
          // and Location to GET .../locations/{loc}/operationresults/{id} (the result, once the status says Succeeded)
          'Microsoft.HybridCompute/locations/operationresults/read'
          // Health-gated rollouts, after patching a VM or Arc machine:
          // GET {machineId}/providers/Microsoft.ResourceHealth/availabilityStatuses/current (the machine's own
          // scope, so every assignment of this role on a subscription or resource group covers it)
          'Microsoft.ResourceHealth/availabilityStatuses/read'
          // GET /subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts?targetResource={machineId}
          // (a subscription path: it takes effect only where this role is assigned on a subscription; a
          // resource-group target gets it from poll-role.bicep at its subscription, as with the LRO status)
          'Microsoft.AlertsManagement/alerts/read'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: assignableScopes
  }
}

output roleDefinitionName string = patchOperator.name
