"""The agent's exception tree; one root so callers can catch it whole.

    AgentError
    ├── ConfigError            (edge_agent.config)      bad configuration, names the key
    ├── ModelError             (edge_agent.models)      a model cannot be found, assembled or loaded
    ├── EngineError            (edge_agent.engines)     an engine failed at run time
    ├── RequestError           (edge_agent.api.schema)  client input is invalid -> 4xx
    └── OverloadedError        (edge_agent.scheduler)   admission queue full -> 429
"""


class AgentError(Exception):
    """Root of every error the agent raises on purpose."""
