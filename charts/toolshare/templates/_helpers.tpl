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

{{- /* The run guard (docs/install.md, "The run guard"). The Secret holding the gate's Ed25519 private
       key as grant.pem: grantKey.existingSecret, or the one the chart makes (grant-key.yaml). */ -}}
{{- define "toolshare.grantKeySecret" -}}
{{- .Values.grantKey.existingSecret | default (printf "%s-grant-key" (include "toolshare.fullname" .)) -}}
{{- end -}}

{{- define "toolshare.grantKeyDir" -}}
/etc/toolshare/grant
{{- end -}}

{{- /* TOOLSHARE_GUARD_IMAGE: guard.image, or the chart's own image (the same image runs the guard).
       settings.py refuses at start-up what is no image reference, so the chart refuses to render it. */ -}}
{{- define "toolshare.guardImage" -}}
{{- $image := .Values.guard.image | default (include "toolshare.image" .) -}}
{{- $ref := `^[a-z0-9][a-z0-9._:/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$` -}}
{{- if or (gt (len $image) 512) (not (regexMatch $ref $image)) -}}
{{- fail (printf "%s: guard_image (TOOLSHARE_GUARD_IMAGE=%s): must be an image reference ([registry/]path[:tag][@sha256:digest])" (ternary "guard.image" "image.repository, image.tag (guard.image is empty: the guard runs the chart's image)" (ne .Values.guard.image "")) (squote $image)) -}}
{{- end -}}
{{- $image -}}
{{- end -}}

{{- /* TOOLSHARE_GRANT_KEY_FILE: the key as both Deployments mount it (with guard.enabled only: values.yaml). */ -}}
{{- define "toolshare.grantKeyFile" -}}
{{ include "toolshare.grantKeyDir" . }}/grant.pem
{{- end -}}

{{- /* The key Secret as a volume. Its files belong to root; the kubelet gives them the pod's fsGroup
       (10001, podSecurityContext) as their group, so with 0440 uid 10001 reads the key through its group
       and no one else but root can. */ -}}
{{- define "toolshare.grantKeyVolume" -}}
- name: grant-key
  secret:
    secretName: {{ include "toolshare.grantKeySecret" . }}
    defaultMode: 0440
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

{{- /* TOOLSHARE_GATE_URL: config.gateUrl, or this release's gate Service. */ -}}
{{- define "toolshare.gateUrl" -}}
{{- .Values.config.gateUrl | default (printf "http://%s-gate.%s.svc.cluster.local:8080" (include "toolshare.fullname" .) .Release.Namespace) -}}
{{- end -}}

{{- /* The operator's settings and policy, which the gate shares (it renders the same decisions). */ -}}
{{- define "toolshare.configEnv" -}}
{{- $c := .Values.config -}}
{{- $p := .Values.policy -}}
- {name: TOOLSHARE_BASE_DOMAIN, value: {{ $c.baseDomain | quote }}}
- {name: TOOLSHARE_INGRESS_CLASS, value: {{ $c.ingressClass | quote }}}
- {name: TOOLSHARE_INGRESS_NAMESPACE, value: {{ $c.ingressNamespace | quote }}}
- {name: TOOLSHARE_GATE_URL, value: {{ include "toolshare.gateUrl" . | quote }}}
- {name: TOOLSHARE_SIGNIN_URL, value: {{ $c.signinUrl | quote }}}
- {name: TOOLSHARE_TLS_SECRET, value: {{ $c.tls.secret | quote }}}
- {name: TOOLSHARE_TLS_CLUSTER_ISSUER, value: {{ $c.tls.clusterIssuer | quote }}}
- {name: TOOLSHARE_SSH_FROM, value: {{ $c.sshFrom | quote }}}
- {name: TOOLSHARE_FIELD_MANAGER, value: {{ $c.fieldManager | quote }}}
- {name: TOOLSHARE_ADMIN_GROUPS, value: {{ join "," $p.adminGroups | quote }}}
- {name: TOOLSHARE_TRUSTED_APPLIERS, value: {{ join ";" $p.trustedAppliers | quote }}}
- {name: TOOLSHARE_DIRECTORY, value: {{ ternary (printf "%s/%s" .Release.Namespace $p.directory.name) "" $p.directory.enabled | quote }}}
- {name: TOOLSHARE_UNCLAIMED_IMAGES_DENY, value: {{ join "," $p.unclaimedImagesDeny | quote }}}
- {name: TOOLSHARE_RESERVED_NAMES, value: {{ join "," $p.reservedNames | quote }}}
- {name: TOOLSHARE_IMAGE_CLAIMS, value: {{ join ";" $p.imageClaims | quote }}}
- {name: TOOLSHARE_ALLOWED_HOST_PATHS, value: {{ join "," $p.allowedHostPaths | quote }}}
{{- end -}}

{{- /* CEL: the requester is an administrator or the control plane (admission/webhookconfig.py trusted). */ -}}
{{- define "toolshare.trustedCel" -}}
{{- $groups := concat (list "system:masters" "system:serviceaccounts:kube-system") .Values.policy.adminGroups | uniq | sortAlpha -}}
{{- printf "request.userInfo.username == \"system:kube-controller-manager\" || (has(request.userInfo.groups) && request.userInfo.groups.exists(g, g in %s))" (toJson $groups | replace "," ", ") -}}
{{- end -}}

{{- /* The operator's routing backend (settings.py; the gate does not route). routing.backend=gateway
needs the Gateway (values.schema.json) and, with an auth flavour that refers to the gate's Service,
a gate URL naming a Service: settings.Settings._check_together refuses anything else at start-up,
so the chart refuses to render it, with the operator's words. */ -}}
{{- define "toolshare.routingEnv" -}}
{{- $r := .Values.routing -}}
- {name: TOOLSHARE_ROUTING, value: {{ $r.backend | quote }}}
{{- if eq $r.backend "gateway" }}
{{- $gw := $r.gateway }}
{{- if has $gw.auth (list "external-auth" "envoy-gateway") }}
{{- $url := include "toolshare.gateUrl" . }}
{{- /* settings.gate_service: http(s)://<service>.<namespace>.svc[.cluster.local][:port][/path], port 1-65535 */ -}}
{{- $hostport := regexReplaceAll "^https?://([^/]*).*$" $url "${1}" }}
{{- $port := regexFind ":[0-9]+$" $hostport | trimPrefix ":" }}
{{- $host := regexReplaceAll ":[0-9]+$" $hostport "" }}
{{- $service := `^[a-z]([-a-z0-9]{0,61}[a-z0-9])?\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\.svc(\.cluster\.local)?$` }}
{{- if or (not (regexMatch "^https?://" $url)) (not (regexMatch $service $host)) (and $port (or (lt (atoi $port) 1) (gt (atoi $port) 65535))) }}
{{- fail (printf "config.gateUrl: gate_url (TOOLSHARE_GATE_URL=%s): with TOOLSHARE_ROUTING=gateway and TOOLSHARE_GATEWAY_AUTH=%s the route's auth refers to the gate's Service, not a URL: the host must be the Service's cluster DNS name, <service>.<namespace>.svc or <service>.<namespace>.svc.cluster.local (or use TOOLSHARE_GATEWAY_AUTH=traefik, which calls the URL); the chart's values: leave config.gateUrl empty (this release's gate Service) or set routing.gateway.auth=traefik" (squote $url) $gw.auth) }}
{{- end }}
{{- end }}
- {name: TOOLSHARE_GATEWAY, value: {{ printf "%s/%s" $gw.namespace $gw.name | quote }}}
- {name: TOOLSHARE_GATEWAY_SECTION, value: {{ $gw.sectionName | quote }}}
- {name: TOOLSHARE_GATEWAY_AUTH, value: {{ $gw.auth | quote }}}
{{- end }}
{{- end -}}
