// The operators' Azure Monitor workbook: per-tenant freshness, run history, webhook rates and
// errors (modules/workbook.json; its queries use the metric names of shared/telemetry.py).
param location string
param insightsId string
param namePrefix string

resource workbook 'Microsoft.Insights/workbooks@2022-04-01' = {
  name: guid(resourceGroup().id, namePrefix, 'fhir-mirror-workbook')
  location: location
  kind: 'shared'
  properties: {
    displayName: 'FHIR mirror (${namePrefix})'
    category: 'workbook'
    sourceId: insightsId
    serializedData: loadTextContent('workbook.json')
  }
}
