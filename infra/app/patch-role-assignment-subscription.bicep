// Assigns the custom patch role on one target subscription.
targetScope = 'subscription'

param roleDefinitionName string
param principalId string

// PatchPilot VM Patch Operator (custom role from patch-role.bicep) on this subscription
resource patchOperatorAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionName)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
  }
}
