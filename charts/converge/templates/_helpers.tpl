{{/* The release's full name: the release name, with the chart's when it lacks it. */}}
{{- define "converge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "converge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "converge.labels" -}}
{{ include "converge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "converge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "converge.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "converge.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The Secret holding the API's bearer token: api.tokenSecret, else the
one the chart generates (api.generateToken), else none (no auth). */}}
{{- define "converge.apiTokenSecret" -}}
{{- if .Values.api.tokenSecret -}}
{{- .Values.api.tokenSecret -}}
{{- else if .Values.api.generateToken -}}
{{- printf "%s-api-token" (include "converge.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The API's scheme: HTTPS when a TLS Secret is given. */}}
{{- define "converge.apiScheme" -}}
{{- if .Values.api.tlsSecret -}}HTTPS{{- else -}}HTTP{{- end -}}
{{- end -}}

{{/* converge.yaml: converge's own config, paths pointing at the mounts. */}}
{{- define "converge.config" -}}
{{- $cfg := deepCopy (default dict .Values.config) -}}
{{- $t := .Values.target -}}
{{- $target := dict "kind" "kubernetes" "field_manager" $t.field_manager "drift" $t.drift "concurrency" $t.concurrency "inventory_namespace" (include "converge.inventoryNamespace" .) "recreate" $t.recreate "timeout" $t.timeout -}}
{{- $_ := set $target "environments" (dict "publish" .Values.environments.publish "install_crd" false) -}}
{{- if $t.kubeconfigSecret -}}
{{- $_ := set $target "kubeconfig" (printf "/etc/converge/kubeconfig/%s" $t.kubeconfigKey) -}}
{{- end -}}
{{- if .Values.shards.enabled -}}
{{- $sh := .Values.shards -}}
{{- $_ := set $target "shards" (dict "lease_prefix" $sh.lease_prefix "lease_duration" $sh.lease_duration "renew_deadline" $sh.renew_deadline "retry_period" $sh.retry_period) -}}
{{- else if .Values.leaderElection.enabled -}}
{{- $le := .Values.leaderElection -}}
{{- $_ := set $target "leader_election" (dict "lease" $le.lease "lease_duration" $le.lease_duration "renew_deadline" $le.renew_deadline "retry_period" $le.retry_period) -}}
{{- end -}}
{{- if $t.context -}}
{{- $_ := set $target "context" $t.context -}}
{{- end -}}
{{- $api := dict "listen" (printf "0.0.0.0:%v" .Values.api.port) "probe_listen" (printf "0.0.0.0:%v" .Values.api.probePort) -}}
{{- if include "converge.apiTokenSecret" . -}}
{{- $_ := set $api "token_file" (printf "/etc/converge/secrets/api/%s" .Values.api.tokenKey) -}}
{{- end -}}
{{- if .Values.api.tlsSecret -}}
{{- $_ := set $api "tls" (dict "cert_file" "/etc/converge/tls/tls.crt" "key_file" "/etc/converge/tls/tls.key") -}}
{{- end -}}
{{- if not .Values.sources -}}
{{- fail "sources: none are given, so converge would run and reconcile nothing (converge run refuses such a config): set sources to your git or s3 claim sources (values.yaml shows both)" -}}
{{- end -}}
{{- $_ := set $cfg "sources" .Values.sources -}}
{{- $_ := set $cfg "target" $target -}}
{{- $_ := set $cfg "api" $api -}}
{{- $_ := set $cfg "state_dir" "/var/lib/converge/state" -}}
{{- if or .Values.policies.files .Values.policies.existingConfigMap -}}
{{- $_ := set $cfg "policies" "/etc/converge/policies" -}}
{{- end -}}
{{- if or .Values.identities (not (or .Values.policies.files .Values.policies.existingConfigMap)) -}}
{{- $_ := set $cfg "identities" "/etc/converge/identities.yaml" -}}
{{- end -}}
{{- if or .Values.schema.content .Values.schema.existingConfigMap -}}
{{- $_ := set $cfg "schema" (printf "/etc/converge/schema/%s" .Values.schema.key) -}}
{{- end -}}
{{- if or .Values.templates.files .Values.templates.existingConfigMap -}}
{{- if .Values.templates.clusterScoped -}}
{{- $_ := set $cfg "templates" (dict "path" "/etc/converge/templates" "cluster_scoped" .Values.templates.clusterScoped) -}}
{{- else -}}
{{- $_ := set $cfg "templates" "/etc/converge/templates" -}}
{{- end -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* The namespace of the inventory ConfigMaps and the Lease. */}}
{{- define "converge.inventoryNamespace" -}}
{{- default .Release.Namespace .Values.target.inventory_namespace -}}
{{- end -}}
