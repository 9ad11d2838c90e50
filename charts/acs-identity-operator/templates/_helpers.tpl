{{/*
Names, labels and derived settings shared by every template.
*/}}

{{/* The chart name, overridable. */}}
{{- define "acs-identity-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name prefix of every object: the release name when it already holds the chart name. */}}
{{- define "acs-identity-operator.fullname" -}}
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

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "acs-identity-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "acs-identity-operator.labels" -}}
helm.sh/chart: {{ include "acs-identity-operator.chart" . }}
{{ include "acs-identity-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: acs-identity-operator
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that select the operator's pods (immutable once installed). */}}
{{- define "acs-identity-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "acs-identity-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "acs-identity-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "acs-identity-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image reference: a digest pins it, else the tag (default: appVersion). */}}
{{- define "acs-identity-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The leader-election Lease name. */}}
{{- define "acs-identity-operator.leaseName" -}}
{{- default (include "acs-identity-operator.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{/* The namespace of the default credentials Secret. */}}
{{- define "acs-identity-operator.defaultCredentialsNamespace" -}}
{{- default .Release.Namespace .Values.defaultCredentials.secretNamespace }}
{{- end }}

{{/* The Secret (in the release namespace) holding the key that seals Entra-credentialed token Secrets. */}}
{{- define "acs-identity-operator.sealingKeySecret" -}}
{{- printf "%s-sealing-key" (include "acs-identity-operator.fullname" .) }}
{{- end }}

{{/* Whether the chart adds the pod label of the AKS workload identity webhook. */}}
{{- define "acs-identity-operator.workloadIdentityWebhook" -}}
{{- if and .Values.workloadIdentity.enabled (not .Values.workloadIdentity.projectToken) }}true{{ end }}
{{- end }}

{{/*
Fails on value combinations the schema cannot express.
*/}}
{{- define "acs-identity-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without a leader every replica would write" }}
{{- end }}
{{- if and .Values.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "serviceMonitor.enabled needs metrics.service.enabled=true" }}
{{- end }}
{{- if ne (len .Values.watchNamespaces) (len (uniq .Values.watchNamespaces)) }}
{{- fail "watchNamespaces lists a namespace twice" }}
{{- end }}
{{- $wi := .Values.workloadIdentity }}
{{- if and $wi.enabled (not $wi.clientId) }}
{{- fail "workloadIdentity.enabled needs workloadIdentity.clientId: the client id of the Entra application or managed identity federated with the operator's ServiceAccount" }}
{{- end }}
{{- if and $wi.projectToken (not (and $wi.enabled $wi.clientId $wi.tenantId)) }}
{{- fail "workloadIdentity.projectToken needs workloadIdentity.enabled=true, workloadIdentity.clientId and workloadIdentity.tenantId: without the webhook nothing else sets them" }}
{{- end }}
{{- if and .Values.rolloutRestart.argoRollouts (not .Values.rolloutRestart.enabled) }}
{{- fail "rolloutRestart.argoRollouts needs rolloutRestart.enabled=true" }}
{{- end }}
{{- with .Values.strategy }}
{{- $surge := toString (dig "rollingUpdate" "maxSurge" "" .) }}
{{- /* Kubernetes defaults an empty type to RollingUpdate. */}}
{{- if and (eq (default "RollingUpdate" .type) "RollingUpdate") (not $.Values.leaderElection.enabled) (ne $surge "0") (ne $surge "0%") }}
{{- fail "strategy.type RollingUpdate without leaderElection.enabled needs strategy.rollingUpdate.maxSurge: 0: two pods would write at once" }}
{{- end }}
{{- end }}
{{- if and .Values.defaultCredentials.secretName .Values.defaultCredentials.endpoint }}
{{- fail "defaultCredentials.secretName and defaultCredentials.endpoint are exclusive: set one (a connection string Secret, or an ACS endpoint reached with the operator's workload identity)" }}
{{- end }}
{{- if and .Values.defaultCredentials.endpoint (not (and $wi.enabled $wi.clientId $wi.tenantId)) }}
{{- fail "defaultCredentials.endpoint uses the operator's own workload identity: set workloadIdentity.enabled=true, workloadIdentity.clientId and workloadIdentity.tenantId" }}
{{- end }}
{{- end }}

{{/*
The rules the operator needs in every namespace it watches; each verb is justified in README.md
("RBAC") and proven used by the chart tests' audit-log comparison (the optional rules by the
runs that enable them: namespace ServiceAccounts in both, rollout restarts in the namespaced one).
*/}}
{{- define "acs-identity-operator.namespacedRules" -}}
# Watch both kinds (shared caches) and add/remove their finalizers (JSON patch).
- apiGroups: ["communication.acs.dev"]
  resources: ["communicationusers", "communicationtokens"]
  verbs: ["list", "watch", "patch"]
# Status is written by server-side apply.
- apiGroups: ["communication.acs.dev"]
  resources: ["communicationusers/status", "communicationtokens/status"]
  verbs: ["patch"]
# CommunicationServices: watched (users resolve their credentials through them), and their
# status (whether the credentials work, users and tokens using them) written by server-side
# apply. They carry no finalizer.
- apiGroups: ["communication.acs.dev"]
  resources: ["communicationservices"]
  verbs: ["list", "watch"]
- apiGroups: ["communication.acs.dev"]
  resources: ["communicationservices/status"]
  verbs: ["patch"]
# Token Secrets carry a controller ownerReference with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin only allows to whoever may update the
# owner's finalizers. No request of the operator uses this verb.
- apiGroups: ["communication.acs.dev"]
  resources: ["communicationtokens/finalizers"]
  verbs: ["update"]
# Secrets: metadata-only watches (credentials and token Secrets), reads of one Secret,
# token Secrets created, then replaced with a resourceVersion precondition (a replace also
# removes data keys someone else added), deletion of token Secrets.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "delete"]
# Events on transitions; a repeated event is patched into a series.
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.workloadIdentity.namespaceServiceAccounts }}
# CommunicationUsers' spec.credentials.workloadIdentity (workloadIdentity.namespaceServiceAccounts,
# off by default: cluster-wide this could mint a token for any ServiceAccount, kube-system's
# included; the operator's own identity, workloadIdentity.enabled, needs neither rule): the named
# ServiceAccount's annotations (metadata-only get: the opt-in, client id and tenant id), then a
# token for it with audience api://AzureADTokenExchange, exchanged with Entra. RBAC can limit
# neither the ServiceAccounts nor the audience: the operator asks only for ServiceAccounts
# annotated communication.acs.dev/allow-token-request: "true", and only that audience.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["serviceaccounts/token"]
  verbs: ["create"]
{{- end }}
{{- if .Values.rolloutRestart.enabled }}
# Rollout restarts (rolloutRestart.enabled): a read of each workload a CommunicationToken names
# in spec.rolloutRestartTargets (its opt-in annotation communication.acs.dev/restart-on-rotation
# and its updateStrategy), then a merge patch of one pod-template annotation. RBAC cannot limit
# this to the workloads that opted in: the operator checks the annotation itself.
- apiGroups: ["apps"]
  resources: ["deployments", "statefulsets", "daemonsets"]
  verbs: ["get", "patch"]
{{- if .Values.rolloutRestart.argoRollouts }}
# Argo Rollouts (rolloutRestart.argoRollouts): the same read, then a merge patch of the Rollout's
# spec.restartAt and one annotation.
- apiGroups: ["argoproj.io"]
  resources: ["rollouts"]
  verbs: ["get", "patch"]
{{- end }}
{{- end }}
{{- end }}

{{/*
ClusterCommunicationServices (cluster-scoped, so a ClusterRole in both modes): watched, and,
by a cluster-wide install only, their status written by server-side apply (several namespaced
installs would each count their own users into one status).
*/}}
{{- define "acs-identity-operator.clusterServiceRules" -}}
- apiGroups: ["communication.acs.dev"]
  resources: ["clustercommunicationservices"]
  verbs: ["list", "watch"]
{{- if not .Values.watchNamespaces }}
- apiGroups: ["communication.acs.dev"]
  resources: ["clustercommunicationservices/status"]
  verbs: ["patch"]
{{- end }}
{{- end }}
