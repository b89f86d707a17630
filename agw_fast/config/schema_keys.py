"""Which keys of each agentgateway config object agw-fast implements, and which it refuses.

A key that agentgateway accepts but agw-fast does not implement must fail the load with
"not supported: <path>", never be skipped: a skipped `jwtAuth` or `localRateLimit` would
silently open what the operator meant to close. The second column was generated once from
agentgateway's JSON schema (`$defs`, all `oneOf`/`anyOf` variants merged) minus the first;
tests/unit/test_config_schema_keys.py re-derives it from the schema file to catch drift.

Names are `$defs` entries; "Root" is the top level and "Def/prop" the inline object under
property `prop` of `Def`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SPECS", "ObjectSpec"]


@dataclass(frozen=True, slots=True)
class ObjectSpec:
    name: str
    implemented: frozenset[str]
    unsupported: frozenset[str]


# object: ("implemented keys", "keys valid in agentgateway that agw-fast refuses")
_TABLE: dict[str, tuple[str, str]] = {
    "Root": (
        "config binds frontendPolicies llm gateways routes backends policies",
        "mcp routeGroups services tcpRoutes ui workloads",
    ),
    "RawConfig": (
        "adminAddr statsAddr readinessAddr backend connectionTerminationDeadline "
        "connectionMinTerminationDeadline logging tracing modelCatalog",
        "additionalTrustDomains caAddress caAuthToken clusterId "
        "customFunctions database dns enableIpv6 gateway "
        "hbone histograms localXdsPath mcp metrics namespace network "
        "sensitiveHeaders serviceAccount session skipValidateTrustDomain spiffe "
        "standardAttributes storage trustDomain workerThreads xdsAddress "
        "xdsAuthToken",
    ),
    "BackendConfig": ("keepalives connectTimeout poolIdleTimeout poolMaxSize", ""),
    "KeepaliveConfig": ("enabled time interval retries", ""),
    "RawLogging": ("level format", "database fields filter"),
    "LocalFrontendPolicies": (
        "http tls accessLog tracing",
        "connect logging networkAuthorization networkExtAuthz proxy "
        "proxyProtocol tcp",
    ),
    "RawTracing": (
        "otlpEndpoint headers otlpProtocol fields randomSampling clientSampling path",
        "",
    ),
    "RawLoggingFields": ("add remove", ""),
    "TracingConfig": (
        "host attributes resources remove randomSampling clientSampling filter path protocol",
        "service backend policies",
    ),
    "FrontendHTTP": (
        "maxBufferSize http1IdleTimeout http1HeaderCase",
        "http1MaxHeaders http2ConnectionWindowSize http2FrameSize "
        "http2KeepaliveInterval http2KeepaliveTimeout http2MaxHeaderSize http2WindowSize "
        "maxConnectionDuration",
    ),
    "LocalBind": ("port listeners tunnelProtocol mode", ""),
    "LocalListener": ("name namespace hostname protocol routes policies tls", "tcpRoutes"),
    "LoggingPolicy": ("filter add remove", "otlp database"),
    "LocalGatewayPolicy": (
        "cors apiKey authorization basicAuth jwtAuth",
        "extAuthz extProc oidc transformations",
    ),
    "LocalTLSServerConfig": (
        "mode cert key root cipherSuites minTLSVersion minTlsVersion maxTLSVersion maxTlsVersion",
        "spiffe keyExchangeGroups",
    ),
    "TLS": ("handshakeTimeout", "alpn minVersion maxVersion cipherSuites keyExchangeGroups"),
    "LocalRoute": ("name namespace ruleName hostnames matches policies backends", ""),
    "RouteMatch": ("headers path method query", ""),
    "PathMatch": ("exact pathPrefix regex", ""),
    "HeaderMatch": ("name value", ""),
    "HeaderValueMatch": ("exact regex", ""),
    "QueryMatch": ("name value", ""),
    "QueryValueMatch": ("exact regex", ""),
    "FilterOrPolicy": (
        "requestHeaderModifier responseHeaderModifier requestRedirect urlRewrite "
        "directResponse backendTLS backendAuth timeout ai apiKey basicAuth authorization jwtAuth "
        "cors localRateLimit delay requestMirror retry",
        "a2a backendTunnel buffer csrf extAuthz "
        "extProc mcpAuthentication mcpAuthorization mcpGuardrails "
        "oidc remoteRateLimit transformations",
    ),
    "UrlRewrite": ("authority path", ""),
    "CorsSerde": (
        "allowCredentials allowHeaders allowMethods allowOrigins exposeHeaders maxAge",
        "",
    ),
    "HostRedirect": ("full host port", ""),
    "PathRedirect": ("full prefix", ""),
    "HeaderModifier": ("add set remove", ""),
    "RequestRedirect": ("scheme authority path status", ""),
    "LocalExplicitOrConditional_DirectResponse": (
        "status body conditional bodyExpression headers",
        "",
    ),
    "LocalConditionalPolicies_DirectResponse": ("conditional", ""),
    "LocalConditionalPolicy_DirectResponse": (
        "condition status body bodyExpression headers",
        "",
    ),
    "DelayPolicy": ("duration", ""),
    "RequestMirror": ("backend percentage", ""),
    "SimpleLocalBackendSerde": ("host", "service backend"),
    "RateLimitSpec": ("maxTokens tokensPerFill fillInterval type", ""),
    "LocalConditionalPolicies_RateLimitSpec": ("conditional", ""),
    "LocalConditionalPolicy_RateLimitSpec": (
        "condition maxTokens tokensPerFill fillInterval type", ""
    ),
    "LocalBackendTLS": (
        "cert key root hostname insecure insecureHost alpn",
        "keyExchangeGroups spiffe subjectAltNames",
    ),
    "BackendAuthCompat": (
        "key",
        "aws azure credentials crossAppAccess gcp jwtSign oauthTokenExchange passthrough",
    ),
    "BackendAuth/key": ("value location", ""),
    "FileOrInline": ("file", ""),
    "AuthorizationLocation": ("header cookie queryParameter expression", ""),
    "AuthorizationLocation/queryParameter": ("name", ""),
    "AuthorizationLocation/cookie": ("name", ""),
    "LocalAPIKeys": ("keys mode location", ""),
    "LocalAPIKey": ("key keyHash metadata allowedModels", ""),
    "LocalBasicAuth": ("htpasswd realm mode authorizationLocation", ""),
    "AuthorizationLocation/header": ("name prefix", ""),
    "LocalJwtConfig": ("mode location providers issuer audiences jwks jwtValidationOptions", ""),
    "ProviderConfig": ("issuer audiences jwks jwtValidationOptions", ""),
    "JWTValidationOptions": ("requiredClaims", ""),
    "FileInlineOrRemote": ("file url", ""),
    "TimeoutPolicy": ("requestTimeout backendRequestTimeout", ""),
    "RetryPolicy": ("attempts backoff codes precondition condition", ""),
    "Policy": (
        "routes defaults finalTransformations modelAliases overrides promptCaching prompts "
        "transformations promptGuard",
        "",
    ),
    "PromptEnrichment": ("append prepend", ""),
    "SimpleChatCompletionMessage": ("role content", ""),
    "LocalRouteBackend": (
        "weight policies host ai backend",
        "aws dynamic internal invalid mcp routeGroup service",
    ),
    "LocalAIBackend": (
        "name provider hostOverride pathOverride pathPrefix tokenize policies groups",
        "",
    ),
    "AIProvider": ("openAI anthropic gemini azure bedrock vertex", "copilot custom"),
    "BedrockProvider": ("model region guardrailIdentifier guardrailVersion", ""),
    "AnthropicProvider": ("model", ""),
    "GeminiProvider": ("model", ""),
    "AzureProvider": ("model resourceName resourceType apiVersion projectName", ""),
    "VertexProvider": ("model region projectId", ""),
    "LocalAIProviders": ("providers", ""),
    "OpenAIProvider": ("model", "moderation"),
    "LocalBackendPolicies": (
        "requestHeaderModifier responseHeaderModifier requestRedirect backendTLS "
        "backendAuth http ai health",
        "a2a authorization backendTunnel extAuthz inferenceRouting "
        "mcpAuthorization mcpGuardrails sessionAffinity tcp transformations",
    ),
    "HTTP": ("version requestTimeout", ""),
    "RuleSet": ("rules", ""),
    # The gateways form (config/load_gateways.py).
    "LocalGateway": (
        "port protocol listeners tls cors apiKey authorization basicAuth jwtAuth",
        "oidc extAuthz extProc transformations",
    ),
    "LocalGatewayListener": (
        "name hostname protocol tls cors apiKey authorization basicAuth jwtAuth",
        "oidc extAuthz extProc transformations",
    ),
    "LocalAttachedRoute": (
        "gateways name namespace ruleName hostnames matches policies backends", "",
    ),
    "FullLocalBackend": ("name host ai policies", "internal mcp aws"),
    "LocalPolicy": ("name target phase policy", ""),
    "ResourceName": ("name namespace", ""),
    "PolicyTarget": ("gateway route backend", "listenerSet"),
    "ListenerTarget": ("gatewayName gatewayNamespace listenerName", "port"),
    "RouteName": ("name namespace ruleName", "kind"),
    "BackendTarget": ("backend", "service"),
    "BackendTarget/backend": ("name namespace", "section"),
    # The `llm:` form (config/load_llm.py).
    "LocalLLMConfig": ("gateways port tls providers models virtualModels policies", ""),
    "LocalLLMProvider": ("name params provider defaults", ""),
    "LocalLLMParams": (
        "model apiKey baseUrl hostOverride pathOverride pathPrefix tokenize "
        "azureResourceName azureResourceType azureApiVersion azureProjectName "
        "awsRegion vertexRegion vertexProject",
        "",
    ),
    "LocalLLMProviderDefaults": (
        "defaults overrides transformation requestHeaders responseHeaders tls backendTLS auth "
        "health backendTunnel promptCaching",
        "",
    ),
    "LocalLLMModels": (
        "id name visibility params provider passthrough authorization defaults overrides "
        "transformation finalTransformation requestHeaders responseHeaders tls backendTLS auth "
        "health backendTunnel guardrails promptCaching matches",
        "",
    ),
    "CustomProvider": ("model providerOverride formats", ""),
    "ProviderFormatConfig": ("type path", ""),
    "LocalLLMVirtualModel": ("name routing", ""),
    "LocalLLMVirtualModelRouting": ("weighted failover conditional", ""),
    "LocalLLMWeightedRouting": ("targets", ""),
    "LocalLLMWeightedTarget": ("model weight", ""),
    "LocalLLMFailoverRouting": ("targets", ""),
    "LocalLLMFailoverTarget": ("model priority", ""),
    "LocalLLMConditionalRouting": ("targets", ""),
    "LocalLLMConditionalTarget": ("model when", ""),
    "LocalLLMPolicy": (
        "apiKey authorization basicAuth cors jwtAuth localRateLimit guardrails",
        "extAuthz extProc oidc remoteRateLimit transformations",
    ),
    "LLMRouteMatch": ("headers", ""),
    "PromptCachingConfig": (
        "cacheSystem cacheMessages cacheTools minTokens cacheMessageOffset", "",
    ),
    # Guardrails (config/load_guardrails.py).
    "PromptGuard": ("streaming request response", ""),
    "RequestGuard": (
        "rejection scope regex webhook openAIModeration bedrockGuardrails googleModelArmor "
        "azureContentSafety",
        "",
    ),
    "ResponseGuard": (
        "rejection regex webhook bedrockGuardrails googleModelArmor azureContentSafety", "",
    ),
    "RequestRejection": ("body status headers", ""),
    "RegexRules": ("action rules", ""),
    "RegexRule": ("builtin pattern", ""),
    "Webhook": ("target headers forwardHeaderMatches failureMode", ""),
    "Moderation": ("model policies", ""),
    "BedrockGuardrails": ("guardrailIdentifier guardrailVersion region policies", ""),
    "GoogleModelArmor": ("templateId projectId location policies", ""),
    "AzureContentSafety": ("endpoint policies analyzeText detectJailbreak", ""),
    "AnalyzeTextConfig": (
        "severityThreshold apiVersion blocklistNames haltOnBlocklistHit", "",
    ),
    "DetectJailbreakConfig": ("apiVersion", ""),
    "AwsAuth": ("serviceName region", "accessKeyId secretAccessKey sessionToken assumeRole"),
    "GcpAuth": ("type", "audience credential"),
    "SimpleLocalBackendPolicies": (
        "requestHeaderModifier backendTLS backendAuth",
        "transformations http tcp backendTunnel",
    ),
    "LocalHealthPolicy": ("unhealthyExpression eviction", ""),
    "LocalEviction": ("duration restoreHealth consecutiveFailures healthThreshold", ""),
}

SPECS: dict[str, ObjectSpec] = {
    name: ObjectSpec(name, frozenset(impl.split()), frozenset(unsupported.split()))
    for name, (impl, unsupported) in _TABLE.items()
}
