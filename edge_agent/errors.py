"""The agent's exception tree; one root so callers can catch it whole.

    AgentError
    ├── ConfigError            (edge_agent.config)      bad configuration, names the key
    ├── ModelError             (edge_agent.models)      a model cannot be found, assembled or loaded
    ├── EngineError            (edge_agent.engines)     an engine failed at run time
    ├── RequestError           (edge_agent.api.schema)  client input is invalid -> 4xx
    │   └── RoutingRefused     (edge_agent.gateway)     nowhere the data class allows can answer -> 403/404/429/503
    ├── OverloadedError        (edge_agent.scheduler)   admission queue full -> 429
    ├── AccessError            (edge_agent.access)      a bad keys file or key arguments
    │   └── AuthError                                   no valid API key -> 401
    ├── UpstreamError          (edge_agent.upstream)    every upstream tried failed
    ├── ClassifierModelError   (edge_agent.policy.classify)  the sensitivity classifier cannot be used
    └── RoutingAuditError      (edge_agent.routing_audit)
"""


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""
