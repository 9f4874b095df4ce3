{{/* Chart name, release-scoped full name (<=63 chars), and standard labels. */}}
{{- define "lipsyncd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "lipsyncd.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* "<fullname>-<component>", the name of every object of one component. */}}
{{- define "lipsyncd.component" -}}
{{- printf "%s-%s" (include "lipsyncd.fullname" .root | trunc 50 | trimSuffix "-") .component -}}
{{- end -}}

{{- define "lipsyncd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lipsyncd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "lipsyncd.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "lipsyncd.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: lipsyncd
{{- end -}}

{{- define "lipsyncd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "lipsyncd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "lipsyncd.secretName" -}}
{{- default (printf "%s-secrets" (include "lipsyncd.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* Image references: the tag defaults to the chart's appVersion. */}}
{{- define "lipsyncd.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "lipsyncd.tritonImage" -}}
{{- printf "%s:%s" .Values.triton.image.repository (.Values.triton.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "lipsyncd.natsHost" -}}
{{- if .Values.nats.enabled -}}
{{- printf "%s.%s.svc" (include "lipsyncd.component" (dict "root" . "component" "nats")) .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/*
Environment both services share. NATS credentials come from the Secret and are spliced into
the URL with Kubernetes' $(VAR) expansion, so they never appear in the pod spec.
*/}}
{{- define "lipsyncd.env" -}}
{{- $secret := include "lipsyncd.secretName" . -}}
{{- if .Values.nats.auth.enabled }}
- name: LIPSYNCD_NATS_USER
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: nats-user } }
- name: LIPSYNCD_NATS_PASSWORD
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: nats-password } }
{{- end }}
- name: LIPSYNCD_NATS_URL
{{- if .Values.nats.enabled }}
  value: {{ printf "nats://%s%s:4222" (ternary "$(LIPSYNCD_NATS_USER):$(LIPSYNCD_NATS_PASSWORD)@" "" .Values.nats.auth.enabled) (include "lipsyncd.natsHost" .) | quote }}
{{- else }}
  value: {{ required "nats.url is required when nats.enabled is false" .Values.nats.url | replace "://" (printf "://%s" (ternary "$(LIPSYNCD_NATS_USER):$(LIPSYNCD_NATS_PASSWORD)@" "" .Values.nats.auth.enabled)) | quote }}
{{- end }}
- name: LIPSYNCD_STREAM_REPLICAS
  value: {{ .Values.nats.streamReplicas | quote }}
- name: LIPSYNCD_TRITON_URL
  value: {{ printf "%s:%d" (include "lipsyncd.component" (dict "root" . "component" "triton")) (int .Values.triton.ports.grpc) | quote }}
- name: LIPSYNCD_TRITON_HTTP_URL
  value: {{ printf "http://%s:%d" (include "lipsyncd.component" (dict "root" . "component" "triton")) (int .Values.triton.ports.http) | quote }}
- name: LIPSYNCD_PUBLIC_URL
  value: {{ .Values.config.publicUrl | quote }}
- name: LIPSYNCD_ALLOW_PRIVATE_URLS
  value: {{ ternary "1" "0" .Values.config.allowPrivateUrls | quote }}
- name: LIPSYNCD_HOME
  value: /var/lib/lipsyncd
- name: LIPSYNCD_STORAGE_DIR
  value: /var/lib/lipsyncd/storage
- name: LIPSYNCD_SECRET_KEY
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: secret-key } }
- name: LIPSYNCD_DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: database-url } }
{{- range $name, $value := .Values.config.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "lipsyncd.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsUser }}
fsGroup: {{ .Values.securityContext.runAsUser }}
seccompProfile: { type: RuntimeDefault }
{{- end -}}

{{- define "lipsyncd.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities: { drop: [ALL] }
{{- end -}}

{{/* Shared media storage (local backend): one ReadWriteMany volume for gateway and orchestrator. */}}
{{- define "lipsyncd.storageVolume" -}}
- name: storage
{{- if .Values.storage.persistence.enabled }}
  persistentVolumeClaim: { claimName: {{ .Values.storage.persistence.existingClaim | default (include "lipsyncd.component" (dict "root" . "component" "storage")) }} }
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
