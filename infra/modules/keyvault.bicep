// Key Vault for tenant secrets (the tenants JSON with client secrets and webhook secrets), read by
// the app through a Key Vault reference in its app settings. Access by Azure RBAC only.
param location string
param name string
param workspaceId string

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      // App settings' Key Vault references are resolved by the platform over the public endpoint
      // when the app has no virtual network; every read needs the Key Vault Secrets User role.
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource vaultLogs 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'vault-audit'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'AuditEvent'
        enabled: true
      }
    ]
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
