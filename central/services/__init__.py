"""Central's handlers, one module per service, in the shape of Flower's SuperLink.

The servicers (:mod:`central.servicers`) read the caller from the TLS session,
convert protobuf to plain values once, call one function here and map its
:class:`central.errors.ServiceError` to a gRPC status. Each function takes
:class:`central.services.base.Central` (the store and central's other parts),
the caller and plain values; refusals and operator actions are written to the
audit log here, so no servicer can forget one.

    base        the parts every handler receives, the caller, audit and admin checks
    enrollment  a new node's bootstrap token and CSR -> its certificate
    fleet       nodes' own calls: heartbeats, certificate renewal, reports, artifact downloads
    nodes       operators on nodes: list, show, label, revoke
    tokens      operators on bootstrap tokens
    registry    model versions: push, list, show, delete, assign
    rollouts    canary rollouts: operator actions and the controller's tick over the store
    federation  federated runs and the SuperLink's node keys
    audit       the audit log and per-node routing totals
    operators   who may call AdminService: create (for the caller's CSR), list, revoke, renew
    history     the rollups of the heartbeats and the burst usage, for viewers
"""
