// Alert rules on the app's own metrics (shared/telemetry.py; README "Telemetry"), each a log
// query over Application Insights evaluated every five minutes, split by tenant or queue where
// that names what to look at, mailed to one action group. Gauges are measured at every fan-out
// (SYNC_FANOUT_SCHEDULE, five minutes by default), so windows are at least ten minutes.
param location string
param actionGroupName string
param alertEmail string
param insightsId string
param namePrefix string

@description('Consecutive failed reconciles of a tenant that raise an alert.')
param failedRunsThreshold int = 3

@description('Messages waiting on the changes queue (the webhook backlog) that raise an alert.')
param backlogDepthThreshold int = 100

@description('Age in seconds of the oldest waiting change message that raises an alert.')
param backlogAgeThreshold int = 300

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: actionGroupName
  location: 'global'
  properties: {
    groupShortName: take(namePrefix, 12)
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

var rules = [
  {
    name: 'freshness'
    title: 'A tenant\'s mirror is stale'
    description: 'No successful sync of the tenant for over two schedule intervals (the health check\'s error level). Look at the tenant\'s last runs (GET /api/tenants/{tenant}/sync/runs) and the source\'s health.'
    severity: 2
    window: 'PT15M'
    splitBy: [
      'tenant'
    ]
    query: 'customMetrics | where name == "sync.freshness_lag" | extend tenant = tostring(customDimensions.tenant), status = tostring(customDimensions.status) | summarize arg_max(timestamp, status, value) by tenant | where status == "past_threshold" | project tenant, freshness_minutes = round(value / 60)'
  }
  {
    name: 'failed-runs'
    title: 'Consecutive failed reconciles'
    description: '${failedRunsThreshold} or more reconciles of the tenant failed in a row. The sync.run traces name the run and the reason; bad credentials show as source.token_failures too.'
    severity: 1
    window: 'PT15M'
    splitBy: [
      'tenant'
    ]
    query: 'customMetrics | where name == "sync.failed_run_streak" | extend tenant = tostring(customDimensions.tenant) | summarize arg_max(timestamp, value) by tenant | where value >= ${failedRunsThreshold} | project tenant, failed_runs = value'
  }
  {
    name: 'poison'
    title: 'Poison messages'
    description: 'A message failed every delivery attempt and waits in a poison queue. Inspect it, fix the cause, then re-drive it (POST /api/tenants/{tenant}/poison/redrive).'
    severity: 1
    window: 'PT10M'
    splitBy: [
      'queue'
    ]
    query: 'customMetrics | where name == "queue.poison_messages" | extend queue = tostring(customDimensions.queue) | summarize arg_max(timestamp, value) by queue | where value > 0 | project queue, messages = value'
  }
  {
    name: 'webhook-backlog'
    title: 'Webhook backlog'
    description: 'Over ${backlogDepthThreshold} changes wait on the changes queue, or the oldest waited over ${backlogAgeThreshold} s: the apply side is not keeping up (source throttling, an open breaker, a database problem).'
    severity: 2
    window: 'PT10M'
    splitBy: []
    query: 'customMetrics | where name in ("queue.depth", "queue.oldest_age") and tostring(customDimensions.queue) == "changes" | summarize depth = maxif(value, name == "queue.depth"), oldest_seconds = maxif(value, name == "queue.oldest_age") | where depth > ${backlogDepthThreshold} or oldest_seconds > ${backlogAgeThreshold}'
  }
  {
    name: 'token-failures'
    title: 'Token refresh failures'
    description: 'The source\'s token endpoint refused the tenant\'s credentials (reason refused: check client id and secret in Key Vault) or failed (reason unavailable: the source is down).'
    severity: 2
    window: 'PT15M'
    splitBy: [
      'tenant'
      'reason'
    ]
    query: 'customMetrics | where name == "source.token_failures" | extend tenant = tostring(customDimensions.tenant), reason = tostring(customDimensions.reason) | summarize failures = sum(value) by tenant, reason | where failures > 0'
  }
  {
    name: 'silent-webhooks'
    title: 'Silent webhooks'
    description: 'A reconcile found changes the tenant\'s webhooks should have announced: the subscription at the source is probably broken or its secret rotated. Check it at the source.'
    severity: 3
    window: 'PT1H'
    splitBy: [
      'tenant'
      'resource_type'
    ]
    query: 'customMetrics | where name == "webhook.silent_changes" | extend tenant = tostring(customDimensions.tenant), resource_type = tostring(customDimensions.resource_type) | summarize changes = sum(value) by tenant, resource_type | where changes > 0'
  }
]

resource alerts 'Microsoft.Insights/scheduledQueryRules@2021-08-01' = [for rule in rules: {
  name: '${namePrefix}-${rule.name}'
  location: location
  properties: {
    displayName: rule.title
    description: rule.description
    severity: rule.severity
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: rule.window
    scopes: [
      insightsId
    ]
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          dimensions: [for column in rule.splitBy: {
            name: column
            operator: 'Include'
            values: [
              '*'
            ]
          }]
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output ruleNames array = [for rule in rules: '${namePrefix}-${rule.name}']
