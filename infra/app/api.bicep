// The Function App on a Flex Consumption plan: Python 3.11, code package in a blob container read with the
// user-assigned identity, and identity-based settings for every storage service (no keys, no connection strings).
param name string
param planName string
param location string = resourceGroup().location
param tags object = {}
@description('azd deploys the code to the resource tagged azd-service-name: api (azure.yaml).')
param serviceName string = 'api'
param identityId string
param identityClientId string
param storageAccountName string
param deploymentContainerName string
param applicationInsightsConnectionString string
@description('PatchPilot\'s own settings (main.bicep); merged with the host settings below.')
param appSettings object
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100
@description('Client id of an Entra app registration: App Service Authentication then signs people in before /api/dashboard. Empty: off.')
param dashboardAuthClientId string = ''
@description('Paths left to function keys when authentication is on: the API that Logic Apps and scripts call.')
param keyOnlyPaths array = []

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Settings the Functions host itself needs. Flex Consumption sets the runtime and its version from
// functionAppConfig.runtime and rejects FUNCTIONS_WORKER_RUNTIME / FUNCTIONS_EXTENSION_VERSION as app settings.
var hostSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
  AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
  APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225:Flex Consumption zone redundancy exists only in some regions and fails elsewhere; enable zoneRedundant where the region supports it.
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_17:Client certificates would break the Logic App and curl callers; callers authenticate with function keys (authLevel FUNCTION).
  // checkov:skip=CKV_AZURE_222:The API is called from outside Azure networks (Logic Apps, scripts) and is protected by function keys; close it with access restrictions or a private endpoint if callers allow.
  // checkov:skip=CKV_AZURE_212:Flex Consumption scales from zero on demand; always-ready instances cost money and queue/timer work tolerates a cold start.
  // checkov:skip=CKV_AZURE_213:Flex Consumption has no App Service health check; the platform manages instance health.
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': serviceName })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      // In siteConfig rather than a sites/config 'appsettings' resource: checkov applies its 'web' config
      // checks to every sites/config resource and would report false findings on the settings.
      appSettings: [for setting in items(union(appSettings, hostSettings)): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Publishing with a user name and password is off; azd and the Azure CLI deploy with Entra ID tokens.
// Child resources are top-level with `parent`: pycep (which checkov uses) keeps only one nested child.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: {
    allow: false
  }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
output uri string = 'https://${functionApp.properties.defaultHostName}'

// App Service Authentication (Entra ID) for people: with a client id, a browser is sent to Entra sign-in before
// the dashboard; the API paths callers reach with a function key (Logic Apps, scripts) are excluded, so they
// keep working with the key alone (docs/dashboard.md).
resource authSettings 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(dashboardAuthClientId)) {
  // checkov:skip=CKV_AZURE_88:checkov reads every sites/config as a web config; this one holds only authentication settings.
  // checkov:skip=CKV_AZURE_65:checkov reads every sites/config as a web config; logging is in siteConfig and Application Insights.
  // checkov:skip=CKV_AZURE_70:checkov reads every sites/config as a web config; httpsOnly is set on the site and requireHttps here.
  // checkov:skip=CKV_AZURE_80:checkov reads every sites/config as a web config; this app runs Python, not .NET.
  // checkov:skip=CKV_AZURE_66:checkov reads every sites/config as a web config; request telemetry goes to Application Insights.
  // checkov:skip=CKV_AZURE_63:checkov reads every sites/config as a web config; request telemetry goes to Application Insights.
  // checkov:skip=CKV_AZURE_222:checkov reads every sites/config as a web config; public access is the site's setting (skipped there, why).
  // checkov:skip=CKV_AZURE_13:This is the authentication (authsettingsV2 platform.enabled); checkov looks for the V1 property.
  parent: functionApp
  name: 'authsettingsV2'
  properties: {
    platform: {
      enabled: true
    }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: keyOnlyPaths
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: dashboardAuthClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: {
          allowedAudiences: [
            'api://${dashboardAuthClientId}'
          ]
        }
      }
    }
    httpSettings: {
      requireHttps: true
    }
  }
}
