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

{{/* The Triton pods' stable gRPC addresses (the StatefulSet's pod names under its headless Service). */}}
{{- define "lipsyncd.tritonUrls" -}}
{{- $name := include "lipsyncd.component" (dict "root" . "component" "triton") -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.triton.replicas) -}}
{{- $urls = append $urls (printf "%s-%d.%s.%s.svc:%d" $name $i $name $.Release.Namespace (int $.Values.triton.ports.grpc)) -}}
{{- end -}}
{{- join "," $urls -}}
{{- end -}}

{{- define "lipsyncd.s3" -}}
{{- hasPrefix "s3://" .Values.storage.url -}}
{{- end -}}

{{/*
Environment of the gateway, orchestrator and test pods (dict "root" . "component" name).
Each of gateway and orchestrator is its own NATS user (proto/topology.py NATS_PERMISSIONS),
its user and password from the Secret; the test pod talks to the gateway only.
*/}}
{{- define "lipsyncd.env" -}}
{{- $root := .root -}}
{{- $secret := include "lipsyncd.secretName" $root -}}
{{- if and $root.Values.nats.auth.enabled (has .component (list "gateway" "orchestrator")) }}
- name: LIPSYNCD_NATS_USER
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: nats-{{ .component }}-user } }
- name: LIPSYNCD_NATS_PASSWORD
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: nats-{{ .component }}-password } }
{{- end }}
- name: LIPSYNCD_NATS_URL
{{- if $root.Values.nats.enabled }}
  value: {{ printf "nats://%s:4222" (include "lipsyncd.natsHost" $root) | quote }}
{{- else }}
  value: {{ required "nats.url is required when nats.enabled is false" $root.Values.nats.url | quote }}
{{- end }}
- name: LIPSYNCD_STREAM_REPLICAS
  value: {{ $root.Values.nats.streamReplicas | quote }}
- name: LIPSYNCD_TRITON_URL
  value: {{ printf "%s:%d" (include "lipsyncd.component" (dict "root" $root "component" "triton")) (int $root.Values.triton.ports.grpc) | quote }}
- name: LIPSYNCD_TRITON_HTTP_URL
  value: {{ printf "http://%s:%d" (include "lipsyncd.component" (dict "root" $root "component" "triton")) (int $root.Values.triton.ports.http) | quote }}
- name: LIPSYNCD_PUBLIC_URL
  value: {{ $root.Values.config.publicUrl | quote }}
- name: LIPSYNCD_ALLOW_PRIVATE_URLS
  value: {{ ternary "1" "0" $root.Values.config.allowPrivateUrls | quote }}
- name: LIPSYNCD_MAX_UPLOAD_BYTES
  value: {{ mul $root.Values.config.maxUploadMiB 1048576 | quote }}
# Several processes share this release: the signing key must come from the Secret.
- name: LIPSYNCD_SCALE_OUT
  value: "1"
- name: LIPSYNCD_HOME
  value: /var/lib/lipsyncd
{{- if eq (include "lipsyncd.s3" $root) "true" }}
- name: LIPSYNCD_STORAGE_URL
  value: {{ $root.Values.storage.url | quote }}
{{- with $root.Values.storage.s3.endpointUrl }}
- name: AWS_ENDPOINT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $root.Values.storage.s3.region }}
- name: AWS_DEFAULT_REGION
  value: {{ . | quote }}
{{- end }}
{{- if $root.Values.storage.s3.credentialsFromSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: s3-access-key-id } }
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: s3-secret-access-key } }
{{- end }}
{{- else }}
- name: LIPSYNCD_STORAGE_DIR
  value: /var/lib/lipsyncd/storage
{{- end }}
- name: LIPSYNCD_SECRET_KEY
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: secret-key } }
- name: LIPSYNCD_DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ $secret }}, key: database-url } }
{{- range $name, $value := $root.Values.config.extraEnv }}
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

{{/* Shared media storage (local backend only): one ReadWriteMany volume for gateway and orchestrator. */}}
{{- define "lipsyncd.storageMount" -}}
{{- if ne (include "lipsyncd.s3" .) "true" }}
- { name: storage, mountPath: /var/lib/lipsyncd/storage }
{{- end }}
{{- end -}}

{{- define "lipsyncd.storageVolume" -}}
{{- if ne (include "lipsyncd.s3" .) "true" }}
- name: storage
{{- if .Values.storage.persistence.enabled }}
  persistentVolumeClaim: { claimName: {{ .Values.storage.persistence.existingClaim | default (include "lipsyncd.component" (dict "root" . "component" "storage")) }} }
{{- else }}
  emptyDir: {}
{{- end }}
{{- end }}
{{- end -}}
