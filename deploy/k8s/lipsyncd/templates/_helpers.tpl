{{- define "lipsyncd.env" -}}
- name: LIPSYNCD_NATS_URL
  value: nats://{{ .Release.Name }}-nats:4222
- name: LIPSYNCD_TRITON_URL
  value: {{ .Release.Name }}-triton:8001
- name: LIPSYNCD_TRITON_HTTP_URL
  value: http://{{ .Release.Name }}-triton:8000
- name: LIPSYNCD_PUBLIC_URL
  value: {{ .Values.config.publicUrl | quote }}
- name: LIPSYNCD_ALLOW_PRIVATE_URLS
  value: {{ .Values.config.allowPrivateUrls | quote }}
- name: LIPSYNCD_HOME
  value: /var/lib/lipsyncd
{{- end -}}
