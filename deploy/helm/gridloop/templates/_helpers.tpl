{{/* Names ------------------------------------------------------------------------------------- */}}

{{- define "gridloop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gridloop.fullname" -}}
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

{{/* The name of one service's objects: (dict "root" $ "name" "reporter") */}}
{{- define "gridloop.component" -}}
{{- printf "%s-%s" (include "gridloop.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "gridloop.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "gridloop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: gridloop
{{- end -}}

{{/* Selector labels of one service: (dict "root" $ "name" "reporter") */}}
{{- define "gridloop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gridloop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "gridloop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gridloop.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "gridloop.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The services, each merged over serviceDefaults, as YAML: name -> settings (enabled ones only). */}}
{{- define "gridloop.services" -}}
{{- $out := dict -}}
{{- range $name, $svc := .Values.services -}}
{{- $merged := mergeOverwrite (deepCopy $.Values.serviceDefaults) (deepCopy (default dict $svc)) -}}
{{- if $merged.enabled -}}
{{- if not $merged.port -}}
{{- fail (printf "services.%s.port is required" $name) -}}
{{- end -}}
{{- $_ := set $out $name $merged -}}
{{- end -}}
{{- end -}}
{{- toYaml $out -}}
{{- end -}}

{{/* Secrets ----------------------------------------------------------------------------------- */}}

{{/* The Secret the workloads read: the operator's, or the chart's own. */}}
{{- define "gridloop.secretName" -}}
{{- default (include "gridloop.fullname" .) .Values.secrets.existingSecret -}}
{{- end -}}

{{/* The Secret the hook Jobs read: before install the chart's own Secret does not exist yet, so
     the chart makes a hook copy that Helm deletes once the hooks succeeded. */}}
{{- define "gridloop.hookSecretName" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.secrets.existingSecret -}}
{{- else -}}
{{- printf "%s-hooks" (include "gridloop.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gridloop.sasl" -}}
{{- if .Values.kafka.sasl.mechanism -}}true{{- end -}}
{{- end -}}

{{/* The data of the chart's own Secret (only without existingSecret); fails on a missing value. */}}
{{- define "gridloop.secretData" -}}
{{- $keys := .Values.secrets.keys -}}
{{ $keys.jwtSecret }}: {{ required "secrets.jwtSecret is required (32+ random bytes: openssl rand -base64 48), or name a Secret in secrets.existingSecret" .Values.secrets.jwtSecret | b64enc | quote }}
{{- if .Values.postgresql.host }}
{{ $keys.postgresPassword }}: {{ required "postgresql.password is required with postgresql.host, or name a Secret in secrets.existingSecret" .Values.postgresql.password | b64enc | quote }}
{{- else }}
{{- range $name, $svc := (include "gridloop.services" . | fromYaml) }}
{{- if $svc.database }}
{{ $name }}-database-url: {{ required (printf "postgresql.urls.%s is required (or postgresql.host and postgresql.password, or secrets.existingSecret)" $name) (get $.Values.postgresql.urls $name) | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- if include "gridloop.sasl" . }}
{{ $keys.kafkaSaslUsername }}: {{ required "kafka.sasl.username is required with kafka.sasl.mechanism, or name a Secret in secrets.existingSecret" .Values.kafka.sasl.username | b64enc | quote }}
{{ $keys.kafkaSaslPassword }}: {{ required "kafka.sasl.password is required with kafka.sasl.mechanism, or name a Secret in secrets.existingSecret" .Values.kafka.sasl.password | b64enc | quote }}
{{- end }}
{{- end -}}

{{/* Environment ------------------------------------------------------------------------------- */}}

{{/* One env entry read from a Secret: (dict "name" ENV "secret" NAME "key" KEY) */}}
{{- define "gridloop.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .key }}
{{- end -}}

{{/* A public URL: the value, else https://<the service's Ingress host>; must be https. */}}
{{- define "gridloop.publicUrl" -}}
{{- $root := .root -}}
{{- $url := get $root.Values.publicUrls .name -}}
{{- if not $url -}}
{{- $svc := get (include "gridloop.services" $root | fromYaml) .name | default dict -}}
{{- if and $root.Values.ingress.enabled $svc.ingress $svc.ingress.host -}}
{{- $url = printf "https://%s" $svc.ingress.host -}}
{{- end -}}
{{- end -}}
{{- $url = required (printf "publicUrls.%s is required (the https address %s), or enable the Ingress with services.%s.ingress.host" .name .what .name) $url -}}
{{- if not (hasPrefix "https://" $url) -}}
{{- fail (printf "publicUrls.%s must be an https:// address (the services refuse plain http for a public address), not %s" .name $url) -}}
{{- end -}}
{{- $url -}}
{{- end -}}

{{/* Settings every GridLoop process shares: (dict "root" $ "files" BOOL); the reference data's
     folders only with files (the services; the hook Jobs read none, and run before any ConfigMap). */}}
{{- define "gridloop.env.common" -}}
- name: GRIDLOOP_VAR_DIR
  value: /app/var
- name: GRIDLOOP_LOG_FORMAT
  value: {{ .root.Values.logs.format | quote }}
- name: GRIDLOOP_ACCESS_LOG
  value: {{ .root.Values.logs.accessLog | quote }}
{{- with .root }}
{{- if $.files }}
- name: GRIDLOOP_JURISDICTION_DIR
  value: {{ if .Values.jurisdictions.files }}/etc/gridloop/jurisdictions{{ else }}{{ .Values.image.dataDir }}/jurisdictions{{ end }}
# set even when the image's: the default is beside the jurisdiction folder, which may be the ConfigMap's
- name: GRIDLOOP_CALENDAR_DIR
  value: {{ if .Values.calendar.files }}/etc/gridloop/calendar{{ else }}{{ .Values.image.dataDir }}/calendar{{ end }}
{{- end }}
{{- range $name, $value := .Values.env }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Kafka client settings; the credentials from the Secret: (dict "root" $ "secret" NAME) */}}
{{- define "gridloop.env.kafka" -}}
{{- $v := .root.Values.kafka -}}
- name: KAFKA_BOOTSTRAP_SERVERS
  value: {{ required "kafka.bootstrapServers is required (host:port of your brokers, comma separated)" $v.bootstrapServers | quote }}
- name: GRIDLOOP_TOPIC_PREFIX
  value: {{ $v.topics.prefix | quote }}
- name: GRIDLOOP_TOPIC_PARTITIONS
  value: {{ $v.topics.partitions | quote }}
- name: GRIDLOOP_TOPIC_REPLICATION
  value: {{ $v.topics.replication | quote }}
- name: GRIDLOOP_KAFKA_SECURITY_PROTOCOL
  value: {{ $v.securityProtocol | quote }}
{{- if $v.sasl.mechanism }}
- name: GRIDLOOP_KAFKA_SASL_MECHANISM
  value: {{ $v.sasl.mechanism | quote }}
{{ include "gridloop.secretEnv" (dict "name" "GRIDLOOP_KAFKA_SASL_USERNAME" "secret" .secret "key" .root.Values.secrets.keys.kafkaSaslUsername) }}
{{ include "gridloop.secretEnv" (dict "name" "GRIDLOOP_KAFKA_SASL_PASSWORD" "secret" .secret "key" .root.Values.secrets.keys.kafkaSaslPassword) }}
{{- end }}
{{- if $v.tls.existingSecret }}
- name: GRIDLOOP_KAFKA_SSL_CAFILE
  value: /etc/gridloop/kafka-tls/{{ $v.tls.caKey }}
{{- if $v.tls.clientCert }}
- name: GRIDLOOP_KAFKA_SSL_CERTFILE
  value: /etc/gridloop/kafka-tls/tls.crt
- name: GRIDLOOP_KAFKA_SSL_KEYFILE
  value: /etc/gridloop/kafka-tls/tls.key
{{- end }}
{{- end }}
{{- end -}}

{{/* One service's database: (dict "root" $ "name" NAME "svc" SETTINGS "secret" NAME "env" ENV) */}}
{{- define "gridloop.env.database" -}}
{{- $pg := .root.Values.postgresql -}}
{{- if $pg.host }}
{{- $query := ternary (printf "?sslmode=%s" $pg.sslmode) "" (ne $pg.sslmode "") }}
- name: {{ .env }}
  value: {{ printf "postgresql://%s@%s:%v/%s%s" $pg.user $pg.host $pg.port (default .name .svc.databaseName) $query | quote }}
{{ include "gridloop.secretEnv" (dict "name" "PGPASSWORD" "secret" .secret "key" .root.Values.secrets.keys.postgresPassword) }}
{{- else }}
{{ include "gridloop.secretEnv" (dict "name" .env "secret" .secret "key" (printf "%s-database-url" .name)) }}
{{- end }}
{{- end -}}

{{/* Pods ------------------------------------------------------------------------------------- */}}

{{/* (dict "root" $ "files" BOOL): the reference data's ConfigMaps only with files */}}
{{- define "gridloop.volumes" -}}
# the root filesystem is read-only: var/ (SQLite fallbacks, generated files) and temporary files
# (large request bodies spool to /tmp) get scratch space
- name: var
  emptyDir: {}
- name: tmp
  emptyDir: {}
{{- $files := .files }}
{{- with .root }}
{{- if and $files .Values.jurisdictions.files }}
- name: jurisdictions
  configMap:
    name: {{ include "gridloop.fullname" . }}-jurisdictions
    items:
    {{- range $path, $_ := .Values.jurisdictions.files }}
      - key: {{ include "gridloop.fileKey" $path }}
        path: {{ $path }}
    {{- end }}
{{- end }}
{{- if and $files .Values.calendar.files }}
- name: calendar
  configMap:
    name: {{ include "gridloop.fullname" . }}-calendar
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  secret:
    secretName: {{ .Values.kafka.tls.existingSecret }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "gridloop.volumeMounts" -}}
- name: var
  mountPath: /app/var
- name: tmp
  mountPath: /tmp
{{- $files := .files }}
{{- with .root }}
{{- if and $files .Values.jurisdictions.files }}
- name: jurisdictions
  mountPath: /etc/gridloop/jurisdictions
  readOnly: true
{{- end }}
{{- if and $files .Values.calendar.files }}
- name: calendar
  mountPath: /etc/gridloop/calendar
  readOnly: true
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/gridloop/kafka-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end -}}

{{/* A ConfigMap key for a file path: keys allow no "/", so a sub-folder's "/" becomes "__". */}}
{{- define "gridloop.fileKey" -}}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+(/[-._a-zA-Z0-9]+)*$" .) -}}
{{- fail (printf "file %q: use a relative path of letters, digits, '-', '_' and '.'" .) -}}
{{- end -}}
{{- if or (contains "__" .) (hasPrefix "." .) (contains "/." .) -}}
{{- fail (printf "file %q: no '__' and no name starting with '.'" .) -}}
{{- end -}}
{{- replace "/" "__" . -}}
{{- end -}}
