"""The agent's exception tree; one root, under edgefleet's, so callers can catch it whole.

Each class is drawn with the module that defines it; tests/unit/test_error_trees.py keeps this true.

    AgentError                 (edge_agent.errors)
    ├── ConfigError            (edge_agent.config)               bad configuration, names the key
    ├── AccessError            (edge_agent.access)               a bad keys file or key arguments
    │   └── AuthError          (edge_agent.access)               no valid API key -> 401
    ├── RequestError           (edge_agent.client_request)       a request that cannot be taken as asked -> 4xx
    │   └── RoutingRefused     (edge_agent.gateway)              nowhere its class may go can answer -> 403/404/429/503
    ├── ClientGoneError        (edge_agent.service)              the client disconnected; nobody is left to answer
    ├── OverloadedError        (edge_agent.scheduler)            admission queue full -> 429
    ├── DeadlineExceededError  (edge_agent.scheduler)            the request ran past its deadline
    ├── EngineError            (edge_agent.scheduler)            an engine failed while decoding
    ├── EngineInputError       (edge_agent.engines)              an input this engine cannot take (.index says which)
    ├── LlamaEngineError       (edge_agent.engines.llama)        llama.cpp refused to load a model or to decode
    ├── NoChatTemplateError    (edge_agent.engines.llama)        the model has no chat template: use /v1/completions
    ├── OnnxEngineError        (edge_agent.engines.onnx)         onnxruntime is missing or refused the model
    ├── ModelError             (edge_agent.models)               a model cannot be found, assembled or verified
    ├── ClassifierModelError   (edge_agent.policy.classify)      the sensitivity classifier cannot be used
    ├── RedactionError         (edge_agent.policy.classify)      redaction did not converge: the text goes nowhere
    ├── UnredactableError      (edge_agent.gateway)              redaction would change a schema, name or id -> 503
    ├── UpstreamError          (edge_agent.upstream)             every upstream tried failed
    ├── _TooLarge              (edge_agent.upstream)             an upstream answer past its cap (internal: a 502)
    ├── TokenSourceError       (edge_agent.cli)                  no usable bootstrap token given to enroll
    ├── RoutingAuditError      (edge_agent.routing_audit)        the routing audit file cannot be read
    ├── ArtifactError          (edge_agent.control.artifacts)    a model artifact refused or not stored (.reason)
    └── ControlError           (edge_agent.control.client)       talking to central failed
        ├── CentralUnavailable (edge_agent.control.client)       central unreachable or too slow: retry with backoff
        ├── CentralRefused     (edge_agent.control.client)       central answered no: retrying alone will not help
        └── EnrollError        (edge_agent.control.client)       enrollment failed; the message says what to do
"""

from edgefleet.errors import EdgefleetError


class AgentError(EdgefleetError):
    """Root of every error the agent raises on purpose."""
