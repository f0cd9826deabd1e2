// The custom role PatchPilot's identity holds at the subscription of each resource-group target: reading the
// status of the long-running operations it started, and listing fired alerts for health-gated rollouts. A role on a
// resource group reaches neither: the status URL,
// /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id}, and the alerts list,
// /subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts, lie outside every resource group (Azure Update
// Manager lists the status permission at "Machine subscription" scope:
// https://learn.microsoft.com/azure/update-manager/roles-permissions).
targetScope = 'subscription'

@description('Role definition name (a GUID, from the deployment subscription and the azd environment) and role name (unique in the tenant).')
param roleDefinitionName string
param roleName string
@description('The subscriptions (/subscriptions/<id>) of the resource-group targets.')
param assignableScopes array

resource operationStatusReader 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionName
  properties: {
    roleName: roleName
    description: 'PatchPilot: read the status of the patch operations it started on VMs and Arc machines, and the alerts fired in the subscription (for health-gated rollouts); no resource, no VM.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          // GET /subscriptions/{sub}/providers/Microsoft.Compute/locations/{loc}/operations/{id} (LRO status)
          'Microsoft.Compute/locations/operations/read'
          // GET /subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/updateCenterOperationResults/{id}
          // (an Arc machine's patch operation: also outside every resource group)
          'Microsoft.HybridCompute/locations/updateCenterOperationResults/read'
          // HybridCompute's newer answer: Azure-AsyncOperation to
          // GET /subscriptions/{sub}/providers/Microsoft.HybridCompute/locations/{loc}/operationstatus/{id} (the status)
          'Microsoft.HybridCompute/locations/operationstatus/read'
          // and Location to GET .../locations/{loc}/operationresults/{id} (the result, once the status says Succeeded)
          'Microsoft.HybridCompute/locations/operationresults/read'
          // GET /subscriptions/{sub}/providers/Microsoft.AlertsManagement/alerts?targetResource={machineId}
          // (health-gated rollouts: the alerts list is a subscription path, also outside every resource group)
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

output roleDefinitionName string = operationStatusReader.name
