// Assigns the operation-status role on the subscription of one or more resource-group targets.
targetScope = 'subscription'

param roleDefinitionName string
param principalId string

// PatchPilot Operation Status Reader (custom role from poll-role.bicep) on this subscription
resource operationStatusReaderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, roleDefinitionName)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionName)
  }
}
