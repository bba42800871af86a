// The FHIR mirror in Azure: a Function App on Flex Consumption (Python 3.11) with a user-assigned
// managed identity, Storage with shared keys disabled, Azure SQL serverless with Entra-only
// authentication, Key Vault for tenant secrets, Application Insights on Log Analytics, the alert
// rules and the operators' workbook. Deploy into an existing resource group (README "Deploy to Azure").
targetScope = 'resourceGroup'

@description('Short name used in every resource name (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'fhirmirror'

@description('Region of every resource; it must offer the Flex Consumption plan.')
param location string = resourceGroup().location

@description('Microsoft Entra object id of the Azure SQL administrator (a group is best); the only login besides the app.')
param sqlAdminObjectId string

@description('Display name of that Entra administrator (user principal name or group name).')
param sqlAdminLogin string

@description('Whether sqlAdminObjectId is a User, a Group or an Application.')
@allowed([
  'User'
  'Group'
  'Application'
])
param sqlAdminType string = 'Group'

@description('E-mail address that receives the alerts.')
param alertEmail string

@description('Public IPv4 address of the machine an operator runs the T-SQL step and migrate from, let through the SQL firewall; empty: none (README, first deployment).')
param operatorIpAddress string = ''

@description('Serverless vCores: the most the database may scale to.')
param sqlMaxVCores int = 1

@description('Minutes of inactivity before the serverless database pauses (-1: never).')
param sqlAutoPauseMinutes int = 60

@description('Flex Consumption: the most instances the app may scale out to.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('NCRONTAB of the fan-out timer (SYNC_FANOUT_SCHEDULE).')
param fanoutSchedule string = '0 */5 * * * *'

@description('Settings of the app beyond the ones this template derives (SYNC_* names, string values).')
param extraAppSettings object = {}

var token = take(uniqueString(resourceGroup().id, namePrefix), 6)
var names = {
  identity: 'id-${namePrefix}-${token}'
  workspace: 'log-${namePrefix}-${token}'
  insights: 'appi-${namePrefix}-${token}'
  storage: take('st${namePrefix}${token}', 24)
  plan: 'plan-${namePrefix}-${token}'
  app: 'func-${namePrefix}-${token}'
  sqlServer: 'sql-${namePrefix}-${token}'
  database: 'mirror'
  vault: take('kv-${namePrefix}-${token}', 24)
  actionGroup: 'ag-${namePrefix}-${token}'
}
var deploymentContainer = 'app-package'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    workspaceName: names.workspace
    insightsName: names.insights
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    name: names.storage
    deploymentContainer: deploymentContainer
    workspaceId: monitoring.outputs.workspaceId
  }
}

module sql 'modules/sql.bicep' = {
  name: 'sql'
  params: {
    location: location
    serverName: names.sqlServer
    databaseName: names.database
    adminObjectId: sqlAdminObjectId
    adminLogin: sqlAdminLogin
    adminType: sqlAdminType
    maxVCores: sqlMaxVCores
    autoPauseMinutes: sqlAutoPauseMinutes
    workspaceId: monitoring.outputs.workspaceId
    alertEmail: alertEmail
    operatorIpAddress: operatorIpAddress
  }
}

module vault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    name: names.vault
    workspaceId: monitoring.outputs.workspaceId
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.properties.principalId
    storageName: storage.outputs.name
    vaultName: vault.outputs.name
    insightsName: monitoring.outputs.insightsName
  }
}

module app 'modules/app.bicep' = {
  name: 'app'
  dependsOn: [
    roles
  ]
  params: {
    location: location
    planName: names.plan
    appName: names.app
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageName: storage.outputs.name
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${deploymentContainer}'
    insightsConnectionString: monitoring.outputs.connectionString
    databaseUrl: 'mssql+pyodbc://@${sql.outputs.fullyQualifiedDomainName}/${names.database}'
    tenantsSecretUri: '${vault.outputs.uri}secrets/tenants-json'
    fanoutSchedule: fanoutSchedule
    maximumInstanceCount: maximumInstanceCount
    extraAppSettings: extraAppSettings
    workspaceId: monitoring.outputs.workspaceId
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    actionGroupName: names.actionGroup
    alertEmail: alertEmail
    insightsId: monitoring.outputs.insightsId
    namePrefix: namePrefix
  }
}

module workbook 'modules/workbook.bicep' = {
  name: 'workbook'
  params: {
    location: location
    insightsId: monitoring.outputs.insightsId
    namePrefix: namePrefix
  }
}

output functionAppName string = names.app
output functionAppHost string = app.outputs.defaultHostName
output identityName string = names.identity
output identityClientId string = identity.properties.clientId
output sqlServer string = sql.outputs.fullyQualifiedDomainName
output sqlDatabase string = names.database
output keyVaultName string = vault.outputs.name
output storageAccountName string = storage.outputs.name
output applicationInsightsName string = monitoring.outputs.insightsName
