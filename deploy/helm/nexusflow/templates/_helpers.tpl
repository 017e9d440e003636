{{/*
The chart's name, truncated to 63 characters (the DNS label limit).
*/}}
{{- define "nexusflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name; a target's objects are "<fullname>-<target>", so it is kept
to 44 characters, leaving room for the longest target name.
*/}}
{{- define "nexusflow.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 44 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 44 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "nexusflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object.
*/}}
{{- define "nexusflow.labels" -}}
helm.sh/chart: {{ include "nexusflow.chart" . }}
{{ include "nexusflow.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: nexusflow
{{- end }}

{{- define "nexusflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "nexusflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
A target's labels and selector labels: call with (dict "root" $ "target" "auth").
*/}}
{{- define "nexusflow.targetLabels" -}}
{{ include "nexusflow.labels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end }}

{{- define "nexusflow.targetSelectorLabels" -}}
{{ include "nexusflow.selectorLabels" .root }}
app.kubernetes.io/component: {{ .target }}
{{- end }}

{{/*
The targets, in start order (cmd/nexusflow: AllTargets).
*/}}
{{- define "nexusflow.targets" -}}
auth routing rate-limiter billing-ledger provider-connector gateway
{{- end }}

{{/*
The values key of a target: rate-limiter -> rateLimiter.
*/}}
{{- define "nexusflow.valuesKey" -}}
{{- . | replace "-" "_" | camelcase | untitle }}
{{- end }}

{{/*
Who calls a target's gRPC port (docs/ARCHITECTURE.md): the gateway calls every service,
provider-connector settles media tasks with billing-ledger. Nothing calls the gateway's.
*/}}
{{- define "nexusflow.callers" -}}
{{- $callers := dict "auth" (list "gateway") "routing" (list "gateway") "rate-limiter" (list "gateway") "billing-ledger" (list "gateway" "provider-connector") "provider-connector" (list "gateway") "gateway" (list) }}
{{- index $callers . | join " " }}
{{- end }}

{{- define "nexusflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "nexusflow.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "nexusflow.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The Secret the chart manages (values given inline).
*/}}
{{- define "nexusflow.secretName" -}}
{{- include "nexusflow.fullname" . }}
{{- end }}

{{/*
The environment variable a provider's API key is read from: dashscope-intl ->
NEXUSFLOW_PROVIDER_DASHSCOPE_INTL_API_KEY.
*/}}
{{- define "nexusflow.providerKeyEnv" -}}
{{- printf "NEXUSFLOW_PROVIDER_%s_API_KEY" (regexReplaceAll "[^A-Za-z0-9]" . "_" | upper) }}
{{- end }}

{{/*
An environment variable from a secret value: call with (dict "root" $ "env" NAME
"ref" <value object> "field" "value"|"url" "key" <key in the chart's Secret>). The object's
existingSecret wins; else its inline field, stored in the chart's Secret. Nothing when
neither is set.
*/}}
{{- define "nexusflow.secretEnv" -}}
{{- if .ref.existingSecret }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ .ref.existingSecret }}
      key: {{ .ref.existingSecretKey }}
{{- else if index .ref .field }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      name: {{ include "nexusflow.secretName" .root }}
      key: {{ .key }}
{{- end }}
{{- end }}

{{/*
Whether a target keeps its state inside the pod (SQLite on the emptyDir, or the
limiter's memory): such a target runs one replica.
*/}}
{{- define "nexusflow.embeddedStore" -}}
{{- $v := .root.Values }}
{{- if and (eq .target "auth") (not (or $v.auth.database.url $v.auth.database.existingSecret)) }}auth.database.url
{{- else if and (eq .target "billing-ledger") (not (or $v.billingLedger.database.url $v.billingLedger.database.existingSecret)) }}billingLedger.database.url
{{- else if and (eq .target "provider-connector") (not (or $v.providerConnector.taskStore.url $v.providerConnector.taskStore.existingSecret)) }}providerConnector.taskStore.url
{{- else if and (eq .target "rate-limiter") (not (or $v.rateLimiter.store.url $v.rateLimiter.store.existingSecret)) }}rateLimiter.store.url
{{- end }}
{{- end }}

{{/*
Seconds Kubernetes waits after SIGTERM (docs/ARCHITECTURE.md, Operations): preStop, then
for the gateway up to one grace each for in-flight requests, the outbox's flush to
billing and the gRPC server's shutdown; for a service the gRPC shutdown; plus 5 s for
the services' own flush.
*/}}
{{- define "nexusflow.terminationGracePeriodSeconds" -}}
{{- $grace := int .root.Values.config.server.drain_grace_seconds }}
{{- $pre := int .root.Values.lifecycle.preStopSleepSeconds }}
{{- if eq .target "gateway" }}
{{- add $pre (mul 3 $grace) 5 }}
{{- else }}
{{- add $pre $grace 5 }}
{{- end }}
{{- end }}

{{/*
nexusflow.yaml: the values' config with what the chart manages laid over it.
*/}}
{{- define "nexusflow.config" -}}
{{- $fullname := include "nexusflow.fullname" . }}
{{- $services := dict }}
{{- range $t := splitList " " (include "nexusflow.targets" .) }}
{{- if ne $t "gateway" }}
{{- $_ := set $services $t (printf "%s-%s:%v" $fullname $t $.Values.ports.grpc) }}
{{- end }}
{{- end }}
{{- $providers := dict }}
{{- range $name, $p := .Values.providers }}
{{- $_ := set $providers $name (dict "kind" $p.kind "base_url" $p.baseUrl "api_key" (printf "${%s:-}" (include "nexusflow.providerKeyEnv" $name))) }}
{{- end }}
{{- $data := "/var/lib/nexusflow" }}
{{- $managed := dict
  "server" (dict
    "http_listen" (printf "0.0.0.0:%v" .Values.ports.http)
    "grpc_listen" (printf "0.0.0.0:%v" .Values.ports.grpc)
    "metrics_listen" (printf "0.0.0.0:%v" .Values.ports.metrics)
    "internal_token" "${NEXUSFLOW_INTERNAL_TOKEN}"
    "admin_rpc_token" "${NEXUSFLOW_ADMIN_RPC_TOKEN:-}")
  "services" $services
  "gateway" (dict
    "admin_key" "${NEXUSFLOW_ADMIN_KEY:-}"
    "outbox" (printf "%s/outbox.db" $data))
  "auth" (dict "database" (printf "${NEXUSFLOW_AUTH_DATABASE:-%s/auth.db}" $data))
  "billing_ledger" (dict "database" (printf "${NEXUSFLOW_LEDGER_DATABASE:-%s/ledger.db}" $data))
  "rate_limiter" (dict "store" "${NEXUSFLOW_RATE_LIMITER_STORE:-memory}")
  "provider_connector" (dict
    "providers" $providers
    "media" (dict "task_store" (printf "${NEXUSFLOW_TASK_STORE:-%s/tasks.db}" $data)))
  "routing" (dict "models" .Values.catalog.models) }}
{{- /* A value that is all ${VAR} is quoted: an empty one stays a string, not null. */}}
{{- regexReplaceAll `(?m)^(\s*[A-Za-z_-]+: )(\$\{.*\})$` (toYaml (mergeOverwrite (deepCopy .Values.config) $managed)) `${1}"${2}"` }}
{{- end }}
