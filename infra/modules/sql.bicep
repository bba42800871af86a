// Azure SQL: a serverless General Purpose database on a server that accepts Microsoft Entra logins
// only. The app's identity becomes a database user in one T-SQL step a person runs (infra/README.md).
param location string
param serverName string
param databaseName string
param adminObjectId string
param adminLogin string
param adminType string
param maxVCores int
param autoPauseMinutes int
param workspaceId string

@description('Where Defender for SQL sends its threat alerts.')
param alertEmail string

@description('Public IPv4 address of the operator who runs the T-SQL step and migrate from their own machine; empty: no rule.')
param operatorIpAddress string = ''

resource server 'Microsoft.Sql/servers@2021-11-01' = {
  name: serverName
  location: location
  properties: {
    minimalTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
    administrators: {
      administratorType: 'ActiveDirectory'
      azureADOnlyAuthentication: true
      login: adminLogin
      sid: adminObjectId
      principalType: adminType
      tenantId: subscription().tenantId
    }
  }
}

// "Allow Azure services": Flex Consumption without a virtual network has no fixed outbound
// address. Logins still need an Entra token for a user of this database.
resource azureServices 'Microsoft.Sql/servers/firewallRules@2021-11-01' = {
  parent: server
  name: 'AllowAllWindowsAzureIps'
  properties: {
    startIpAddress: '0.0.0.0'
    endIpAddress: '0.0.0.0'
  }
}

// The operator's machine (infra/README.md, steps 4 and 5): without it sqlcmd and migrate from a
// laptop get error 40615. Remove the rule once the schema is in (the README says how).
resource operator 'Microsoft.Sql/servers/firewallRules@2021-11-01' = if (!empty(operatorIpAddress)) {
  parent: server
  name: 'operator'
  properties: {
    startIpAddress: operatorIpAddress
    endIpAddress: operatorIpAddress
  }
}

resource database 'Microsoft.Sql/servers/databases@2021-11-01' = {
  parent: server
  name: databaseName
  location: location
  sku: {
    name: 'GP_S_Gen5'
    tier: 'GeneralPurpose'
    family: 'Gen5'
    capacity: maxVCores
  }
  properties: {
    autoPauseDelay: autoPauseMinutes
    minCapacity: json('0.5')
    zoneRedundant: false
    requestedBackupStorageRedundancy: 'Local'
  }
}

resource auditing 'Microsoft.Sql/servers/auditingSettings@2021-11-01' = {
  parent: server
  name: 'default'
  properties: {
    state: 'Enabled'
    isAzureMonitorTargetEnabled: true
    retentionDays: 90
  }
}

resource threatDetection 'Microsoft.Sql/servers/securityAlertPolicies@2021-11-01' = {
  parent: server
  name: 'Default'
  properties: {
    state: 'Enabled'
    emailAccountAdmins: true
    emailAddresses: [
      alertEmail
    ]
    disabledAlerts: []
  }
}

// Auditing and threat detection are set once on the server and cover every database (both on a
// database too would write every audit record twice).

// Audit events go to Log Analytics through the master database's diagnostic setting (the
// nested-name form: the master database is the server's, not a resource of this template).
resource auditLogs 'Microsoft.Sql/servers/databases/providers/diagnosticSettings@2021-05-01-preview' = {
  name: '${server.name}/master/microsoft.insights/sql-audit'
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'SQLSecurityAuditEvents'
        enabled: true
      }
    ]
  }
  dependsOn: [
    auditing
  ]
}

output fullyQualifiedDomainName string = server.properties.fullyQualifiedDomainName
output databaseId string = database.id
