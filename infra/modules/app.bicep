// The Function App on the Flex Consumption plan (Python 3.11), running as the user-assigned
// identity: Storage, Key Vault references, Azure SQL and Application Insights all use it.
param location string
param planName string
param appName string
param identityId string
param identityClientId string
param storageName string
param deploymentContainerUrl string
param insightsConnectionString string
param databaseUrl string
param tenantsSecretUri string
param fanoutSchedule string
param maximumInstanceCount int
param extraAppSettings object
param workspaceId string

@description('Memory of one instance (MB).')
@allowed([
  2048
  4096
])
param instanceMemoryMB int = 2048

// Every name here is read by shared/settings.py (tests/infra checks that each one is).
var settings = union({
  AzureWebJobsStorage__accountName: storageName
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identityClientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insightsConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
  SYNC_DATABASE_URL: databaseUrl
  SYNC_AZURE_CREDENTIAL: 'managed-identity'
  SYNC_AZURE_CLIENT_ID: identityClientId
  SYNC_TENANTS_JSON: '@Microsoft.KeyVault(SecretUri=${tenantsSecretUri})'
  SYNC_FANOUT_SCHEDULE: fanoutSchedule
  SYNC_LOG_LEVEL: 'INFO'
}, extraAppSettings)

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: appName
  location: location
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
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      remoteDebuggingEnabled: false
      appSettings: [for setting in items(settings): {
        name: setting.key
        value: setting.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
}

// Basic publishing credentials (FTP, SCM) off: deploy with Entra (az functionapp deployment).
resource ftp 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scm 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: {
    allow: false
  }
}

resource appLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'function-logs'
  scope: app
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'FunctionAppLogs'
        enabled: true
      }
    ]
  }
}

output defaultHostName string = app.properties.defaultHostName
