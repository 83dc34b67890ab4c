{{/*
Chart name, truncated to the 63 characters a label value allows.
*/}}
{{- define "understudy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name of the release's objects: <release>-understudy, or <release> when it already names the chart.
*/}}
{{- define "understudy.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Name of cluster-scoped objects: qualified by the release namespace, so that one release per site (east and
west in different namespaces of one cluster) never collide.
*/}}
{{- define "understudy.clusterName" -}}
{{- printf "%s-%s" .Release.Namespace (include "understudy.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "understudy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "understudy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "understudy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end }}

{{- define "understudy.labels" -}}
helm.sh/chart: {{ include "understudy.chart" . }}
{{ include "understudy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: understudy
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "understudy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "understudy.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespace the controller watches: watchNamespace, else the release namespace in namespacedOnly mode,
else empty (all namespaces).
*/}}
{{- define "understudy.watchNamespace" -}}
{{- if .Values.watchNamespace }}
{{- .Values.watchNamespace }}
{{- else if .Values.namespacedOnly }}
{{- .Release.Namespace }}
{{- end }}
{{- end }}

{{- define "understudy.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Rules the controller needs on the objects it manages, wherever pairs live. Nothing more: no delete, no
list of Secrets, no Pods, no Nodes.
*/}}
{{- define "understudy.rules" -}}
# DisasterRecoveryPairs: watch them, and journal transitions in their status.
- apiGroups: ["dr.understudy.dev"]
  resources: ["disasterrecoverypairs"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["dr.understudy.dev"]
  resources: ["disasterrecoverypairs/status"]
  verbs: ["get", "patch", "update"]
- apiGroups: ["dr.understudy.dev"]
  resources: ["disasterrecoverypairs/finalizers"]
  verbs: ["update"]
# Credentials by name, and the DataSource Secret rewritten on failover.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "update", "patch"]
# The application's config (a JSON pointer spliced on failover).
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "update", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Rollout restarts of the application.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets"]
  verbs: ["get", "patch"]
# ExternalDNS records flipped on failover.
- apiGroups: ["externaldns.k8s.io"]
  resources: ["dnsendpoints"]
  verbs: ["get", "create", "patch"]
# Rejoin Jobs (spec.sites[*].rejoin.job): one created per attempt, an unfinished one of the same
# epoch looked up (list) and adopted, polled until it finishes (get), deleted past the hook's timeout.
# Never updated or patched; no watch (it is polled).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "delete"]
{{- end }}

{{/*
Settings the chart cannot express in values.schema.json.
*/}}
{{- define "understudy.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 requires leaderElection.enabled=true: unelected replicas would all act on the same pairs" }}
{{- end }}
{{- end }}
