{{/* Names, labels and RBAC rules shared by the templates. */}}

{{- define "modeldepot.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldepot.fullname" -}}
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

{{- define "modeldepot.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "modeldepot.selectorLabels" -}}
app.kubernetes.io/name: {{ include "modeldepot.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "modeldepot.labels" -}}
helm.sh/chart: {{ include "modeldepot.chart" . }}
{{ include "modeldepot.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: modeldepot
{{- end }}

{{- define "modeldepot.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "modeldepot.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image: repository@digest, else repository:tag (tag defaults to appVersion). */}}
{{- define "modeldepot.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Watched namespaces when rbac.scope is namespaces (default: the release namespace). */}}
{{- define "modeldepot.watchedNamespaces" -}}
{{- if .Values.rbac.namespaces }}
{{- toJson (uniq .Values.rbac.namespaces) }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/*
Rules in each namespace holding ModelArtifacts, derived from operator/modeldepot/kube.py and kopf:
- modelartifacts: kopf lists/watches them and patches finalizers and its annotations; kube.get_artifact.
- modelartifacts/status: kube.patch_artifact_status, and kube.apply_node_status and
  forget_node_status (server-side applies of status.nodes entries, also the patch verb); get+patch
  are also what each artifact's fetcher Role grants (for that one artifact), and RBAC lets the
  operator create such a Role only because it holds those permissions itself.
- modelartifacts/finalizers update: ownerReferences with blockOwnerDeletion on Jobs and claims
  (OwnerReferencesPermissionEnforcement).
- jobs: kopf watches claim fetch Jobs; create_job, list_jobs, delete_job.
- pods: list_pods (job results), force_delete_pod (pods of vanished nodes).
- persistentvolumeclaims: get_claim, create_claim.
- serviceaccounts, roles, rolebindings create: ensure_fetcher_identity (one per artifact; the Role
  and binding are owned by the artifact and garbage-collected with it).
- secrets get: read_secret_key, only the Secret and key a spec's tokenSecretRef names (to report
  TokenSecretNotFound before any Job, and to copy the token of a node-local artifact).
- events: kopf.info / kopf.warn.
*/}}
{{- define "modeldepot.namespacedRules" -}}
- apiGroups: [modeldepot.dev]
  resources: [modelartifacts]
  verbs: [get, list, watch, patch]
- apiGroups: [modeldepot.dev]
  resources: [modelartifacts/status]
  verbs: [get, patch]
- apiGroups: [modeldepot.dev]
  resources: [modelartifacts/finalizers]
  verbs: [update]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
- apiGroups: [""]
  resources: [persistentvolumeclaims]
  verbs: [get, create]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [create]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/*
Rules in the operator's own (release) namespace, where node-local Jobs run (hostPath pods never run
in a tenant's namespace): the Jobs and pods, each node-local artifact's fetcher ServiceAccount and
its copy of the token Secret (kube.apply_secret, kube.delete_fetcher_objects) and its node records
ConfigMap (kube.get_node_records, kube.write_node_records).
*/}}
{{- define "modeldepot.operatorNamespaceRules" -}}
{{- if eq .Values.rbac.scope "namespaces" }}
# kopf watches every namespace in MODELDEPOT_NAMESPACES, the release namespace included
- apiGroups: [modeldepot.dev]
  resources: [modelartifacts]
  verbs: [get, list, watch]
{{- end }}
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, delete]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [create, patch, delete]
# node-local artifacts' node records (get_node_records, write_node_records: a server-side apply)
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch, delete]
{{- end }}

{{/*
Cluster-scoped rules, in both scopes: nodes (nodeLocal targets: list_nodes, node_exists), CRDs
(kopf's resource scanning) and namespaces (kopf's namespace scanning).
*/}}
{{- define "modeldepot.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [get, list]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
{{- end }}
