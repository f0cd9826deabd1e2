// Assigns the custom patch role on one target resource group.
targetScope = 'resourceGroup'

param roleDefinitionName string
param principalId string

// PatchPilot VM Patch Operator (custom role from patch-role.bicep) on this resource group
resource patchOperatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(resourceGroup().id, principalId, roleDefinitionName)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
  }
}
