{{/*
dee.toml: the `config` values with what the chart decides (where the project is, the metrics
and ingress listeners, the mounted audit signing key). Written by a small TOML writer of our own rather than toToml: Helm reads
every number of the values as a float, which toToml writes as one (`partitions = 16.0`,
`max_mail_bytes = 1.048576e+07`), a misleading dee.toml for whoever reads the ConfigMap.
*/}}
{{- define "dee.configToml" -}}
{{- $project := ternary "/etc/dee/project" "/app" (eq (include "dee.hasProject" .) "true") }}
{{- $managed := dict
  "config_dir" $project
  "metrics" (dict "enabled" true "host" "0.0.0.0" "port" .Values.metrics.port)
  "ingress" (dict "host" "0.0.0.0" "port" .Values.ingress.port) }}
{{- if .Values.secrets.auditSigningKey }}
{{- /* the chart's Secret holds the checkpoint signing key: point the daemons at its mount */}}
{{- $_ := set $managed "audit" (dict "signing_key_file" "/var/run/secrets/dee/audit/signing-key") }}
{{- end }}
{{- $config := mustMergeOverwrite (deepCopy .Values.config) $managed }}
{{- include "dee.toml.table" (dict "table" $config "path" list) }}
{{- end }}

{{/* A table's keys and values, then each sub-table under its [header]; null values are left out. */}}
{{- define "dee.toml.table" -}}
{{- range $key, $value := .table }}
{{- if not (or (kindIs "map" $value) (kindIs "invalid" $value)) }}
{{ include "dee.toml.key" $key }} = {{ include "dee.toml.value" $value }}
{{- end }}
{{- end }}
{{- range $key, $value := .table }}
{{- if kindIs "map" $value }}
{{- $path := append $.path (include "dee.toml.key" $key) }}

[{{ join "." $path }}]
{{- include "dee.toml.table" (dict "table" $value "path" $path) }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dee.toml.key" -}}
{{- if regexMatch "^[A-Za-z0-9_-]+$" . }}{{ . }}{{ else }}{{ toJson . }}{{ end }}
{{- end }}

{{/* A value: strings as JSON strings (valid TOML basic strings), whole numbers as integers. */}}
{{- define "dee.toml.value" -}}
{{- if kindIs "map" . }}
{{- $entries := list }}
{{- range $key, $value := . }}
{{- if not (kindIs "invalid" $value) }}
{{- $entries = append $entries (printf "%s = %s" (include "dee.toml.key" $key) (include "dee.toml.value" $value)) }}
{{- end }}
{{- end }}
{{- printf "{%s}" (join ", " $entries) }}
{{- else if kindIs "slice" . }}
{{- $items := list }}
{{- range . }}
{{- $items = append $items (include "dee.toml.value" .) }}
{{- end }}
{{- printf "[%s]" (join ", " $items) }}
{{- else if kindIs "string" . }}
{{- toJson . }}
{{- else if kindIs "bool" . }}
{{- ternary "true" "false" . }}
{{- else if kindIs "float64" . }}
{{- if eq . (floor .) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else if or (kindIs "int" .) (kindIs "int64" .) }}
{{- . }}
{{- else }}
{{- fail (printf "config: %v is not a TOML value" .) }}
{{- end }}
{{- end }}
