{{/* Names and labels, as `helm create` makes them. */}}
{{- define "agw-fast.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "agw-fast.fullname" -}}
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

{{- define "agw-fast.selectorLabels" -}}
app.kubernetes.io/name: {{ include "agw-fast.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "agw-fast.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "agw-fast.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "agw-fast.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "agw-fast.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The config file's text: `configText` verbatim, else `config` as YAML, else the chart's default.
*/}}
{{- define "agw-fast.configText" -}}
{{- if .Values.configText }}
{{- .Values.configText }}
{{- else if .Values.config }}
{{- toYaml .Values.config }}
{{- else }}
{{- .Files.Get "files/config.yaml" }}
{{- end }}
{{- end }}

{{/*
The port of one of the config's `config.*Addr` addresses ("host:port", "[v6]:port" or "off"),
or agw-fast's default when the config does not set it: the chart reads its probe and metrics
ports from the config, so the two cannot disagree. A port written `${VAR:-15020}` is read as its
default. Call with (list $ "statsAddr" "15020").
*/}}
{{- define "agw-fast.addrPort" -}}
{{- $root := index . 0 }}
{{- $key := index . 1 }}
{{- $config := include "agw-fast.configText" $root | fromYaml }}
{{- if hasKey $config "Error" }}
{{- fail (printf "the config is not YAML that Helm can read: %s" (get $config "Error")) }}
{{- end }}
{{- $address := toString (dig "config" $key (printf "[::]:%s" (index . 2)) $config) }}
{{- if eq $address "off" }}off
{{- else }}
{{- /* "${STATS_PORT:-15020}": the default is the port the pod gets unless it sets the variable */}}
{{- $port := regexFind "[0-9]+\\}?$" $address | trimSuffix "}" }}
{{- if not $port }}
{{- fail (printf "config.%s: expected host:port or \"off\", got %q" $key $address) }}
{{- end }}
{{- $port }}
{{- end }}
{{- end }}

{{- define "agw-fast.statsPort" -}}
{{- include "agw-fast.addrPort" (list . "statsAddr" "15020") }}
{{- end }}

{{- define "agw-fast.readinessPort" -}}
{{- $port := include "agw-fast.addrPort" (list . "readinessAddr" "15021") }}
{{- if eq $port "off" }}
{{- fail "config.readinessAddr: the probes need it; it cannot be \"off\" in this chart" }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
The shutdown settings, checked: agw-fast's drain deadline is derived from the grace period as
agentgateway derives it (grace - 5 s, or grace - 1 s at 10 s or less, at least 1 s), and the
minimum drain comes before it, so the two must fit in the grace period with room to exit.
*/}}
{{- define "agw-fast.checkShutdown" -}}
{{- $grace := int .Values.shutdown.terminationGracePeriodSeconds }}
{{- $min := int .Values.shutdown.minDrainSeconds }}
{{- if lt $grace 2 }}
{{- fail (printf "shutdown.terminationGracePeriodSeconds: must be at least 2, got %d" $grace) }}
{{- end }}
{{- $deadline := ternary (sub $grace 5) (sub $grace 1) (gt $grace 10) | int }}
{{- $deadline = max $deadline 1 | int }}
{{- if ge (add $min $deadline) $grace }}
{{- fail (printf "shutdown.minDrainSeconds: %ds of minimum drain plus the %ds drain deadline derived from terminationGracePeriodSeconds (%d) would reach Kubernetes' SIGKILL; use at most %ds" $min $deadline $grace (sub (sub $grace $deadline) 1)) }}
{{- end }}
{{- end }}
