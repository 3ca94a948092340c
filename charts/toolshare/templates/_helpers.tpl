{{- define "toolshare.fullname" -}}
{{- if contains "toolshare" .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-toolshare" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "toolshare.labels" -}}
app.kubernetes.io/name: toolshare
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: toolshare
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "toolshare.selector" -}}
app.kubernetes.io/name: toolshare
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "toolshare.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "toolshare.webhookService" -}}
{{ include "toolshare.fullname" . }}-webhook
{{- end -}}

{{- define "toolshare.webhookSecret" -}}
{{ include "toolshare.fullname" . }}-webhook-tls
{{- end -}}

{{- /* Non-root, nothing writable but /tmp, no privileges: the same for both containers. */ -}}
{{- define "toolshare.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "toolshare.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{- /* Rules of a ClusterRole or Role kept in files/ (copies of manifests/, one source: make sync). */ -}}
{{- define "toolshare.rulesFrom" -}}
{{- $doc := .root.Files.Get .file | fromYaml -}}
{{- if not $doc.rules }}{{ fail (printf "%s has no rules" .file) }}{{ end -}}
{{- toYaml $doc.rules -}}
{{- end -}}
