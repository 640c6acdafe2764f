{{/*
Names and labels. Every object carries dee.labels; selectors use dee.selectorLabels only,
which never change across upgrades (no version, no chart label).
*/}}

{{- define "dee.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: the release name alone when it already contains the chart's. */}}
{{- define "dee.fullname" -}}
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

{{- define "dee.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Call with (dict "ctx" $ "component" "daemon"); the component may be empty. */}}
{{- define "dee.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dee.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end }}

{{- define "dee.labels" -}}
helm.sh/chart: {{ include "dee.chart" .ctx }}
{{ include "dee.selectorLabels" . }}
app.kubernetes.io/version: {{ include "dee.imageTag" .ctx | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: dee
{{- end }}

{{- define "dee.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "dee.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (include "dee.imageTag" .) }}
{{- end }}
{{- end }}

{{- define "dee.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dee.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Secrets: each key of the Secret and the environment variable it becomes. The chart's Secret
holds the keys given a value; an existingSecret must hold databaseUrl and redisUrl.
*/}}
{{- define "dee.secretEnv" -}}
databaseUrl: DATABASE_URL
redisUrl: REDIS_URL
smtpPassword: DEE_CHANNELS_EMAIL_SMTP_PASSWORD
voiceAuthToken: DEE_CHANNELS_VOICE_AUTH_TOKEN
ingressSigningKey: DEE_INGRESS_SIGNING_KEY
ingressPreviousKeys: DEE_INGRESS_PREVIOUS_KEYS
mailgunSigningKey: DEE_INGRESS_MAILGUN_SIGNING_KEY
postmarkPassword: DEE_INGRESS_POSTMARK_PASSWORD
standardWebhooksSecret: DEE_INGRESS_STANDARD_WEBHOOKS_SECRET
inboundMailSecret: DEE_INGRESS_INBOUND_MAIL_SECRET
{{- end }}

{{- define "dee.secretName" -}}
{{- default (include "dee.fullname" .) .Values.secrets.existingSecret }}
{{- end }}

{{/* The Secret's data: every key of dee.secretEnv (or only those in .keys) given a value. */}}
{{- define "dee.secretData" -}}
{{- $secrets := .ctx.Values.secrets }}
{{- $keys := .keys | default (keys (fromYaml (include "dee.secretEnv" .ctx)) | sortAlpha) }}
{{- range $key := $keys }}
{{- with index $secrets $key }}
{{ $key }}: {{ . | b64enc | quote }}
{{- end }}
{{- end }}
{{- if and (not .keys) .ctx.Values.secrets.auditSigningKey }}
auditSigningKey: {{ .ctx.Values.secrets.auditSigningKey | b64enc | quote }}
{{- end }}
{{- end }}

{{/*
A container's environment: the configuration file and the secrets it needs, each through a
secretKeyRef. Call with (dict "ctx" $ "secret" NAME "keys" (list ...)); no keys: all of them.
*/}}
{{- define "dee.env" -}}
- name: DEE_CONFIG
  value: /etc/dee/config/dee.toml
{{- $all := fromYaml (include "dee.secretEnv" .ctx) }}
{{- $secret := .secret }}
{{- range $key := .keys | default (keys $all | sortAlpha) }}
- name: {{ index $all $key }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $key }}
      {{- if not (has $key (list "databaseUrl" "redisUrl")) }}
      optional: true
      {{- end }}
{{- end }}
{{- end }}

{{/* The restricted Pod Security Standard, for every pod and every container of the chart. */}}
{{- define "dee.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
fsGroup: {{ .Values.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "dee.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.runAsUser }}
runAsGroup: {{ .Values.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
What every pod of the chart shares: service account, pull secrets, security context. The
migration hook's pod runs before the release's ServiceAccount exists: it gets the namespace's
default one (it needs no permission, and mounts no token) unless serviceAccount.create is false.
*/}}
{{- define "dee.podCommon" -}}
{{- if and .hook .ctx.Values.serviceAccount.create }}
serviceAccountName: default
{{- else }}
serviceAccountName: {{ include "dee.serviceAccountName" .ctx }}
{{- end }}
automountServiceAccountToken: false
{{- with .ctx.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- include "dee.podSecurityContext" .ctx | nindent 2 }}
{{- end }}

{{/* The configuration volume (dee.toml) of ConfigMap NAME, and /tmp: the root filesystem is read-only. */}}
{{- define "dee.baseVolumes" -}}
- name: config
  configMap:
    name: {{ .name }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- end }}

{{- define "dee.baseMounts" -}}
- name: config
  mountPath: /etc/dee/config
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- end }}

{{/* Whether the project (plans, templates, scripts) comes from the chart's ConfigMap. */}}
{{- define "dee.hasProject" -}}
{{- if or .Values.project.plans .Values.project.templates .Values.project.scripts }}true{{ end }}
{{- end }}

{{- define "dee.projectVolume" -}}
{{- if include "dee.hasProject" . }}
- name: project
  configMap:
    name: {{ include "dee.fullname" . }}-project
    items:
      {{- range $dir := list "plans" "templates" "scripts" }}
      {{- range $file, $_ := index $.Values.project $dir }}
      - key: {{ $dir }}.{{ $file }}
        path: {{ $dir }}/{{ $file }}
      {{- end }}
      {{- end }}
{{- end }}
{{- end }}

{{- define "dee.projectMount" -}}
{{- if include "dee.hasProject" . }}
- name: project
  mountPath: /etc/dee/project
  readOnly: true
{{- end }}
{{- end }}

{{/* The `dee migrate` container: the Job's, or the pods' init container. */}}
{{- define "dee.migrateContainer" -}}
- name: migrate
  image: {{ include "dee.image" .ctx | quote }}
  imagePullPolicy: {{ .ctx.Values.image.pullPolicy }}
  args: [migrate]
  env:
    {{- include "dee.env" (dict "ctx" .ctx "secret" .secret "keys" (list "databaseUrl")) | nindent 4 }}
  volumeMounts:
    {{- include "dee.baseMounts" .ctx | nindent 4 }}
  resources:
    {{- toYaml .ctx.Values.migrations.resources | nindent 4 }}
  securityContext:
    {{- include "dee.containerSecurityContext" .ctx | nindent 4 }}
{{- end }}

{{/* Where a component's pods may run: its nodeSelector, affinity, tolerations, spread. */}}
{{- define "dee.scheduling" -}}
{{- range $field := list "nodeSelector" "affinity" "tolerations" "topologySpreadConstraints" }}
{{- with index $ $field }}
{{ $field }}:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}
{{- end }}

{{/* Pod annotations that roll the pods when their configuration or the chart's Secret changes. */}}
{{- define "dee.checksums" -}}
checksum/config: {{ include "dee.configToml" . | sha256sum }}
checksum/project: {{ toJson .Values.project | sha256sum }}
{{- if not .Values.secrets.existingSecret }}
checksum/secret: {{ include "dee.secretData" (dict "ctx" .) | sha256sum }}
{{- end }}
{{- end }}
