"""Federated learning: Flower ClientApp/ServerApp, the tasks, SecAgg+ settings, SuperLink/SuperNode supervision.

federated imports only edgefleet. The agent and central may import these modules, its public entry points,
and no others (tests/unit/project/test_layers.py holds them to it):

- `federated.errors`: FederatedError and TaskError.
- `federated.local_data`: a node's training data files (the agent appends labeled examples, counts usage).
- `federated.supernode`: the agent starts its supervised SuperNode.
- `federated.supernode_runtime`: which Python runs the SuperNode (the agent's, or a 3.11+ venv beside an agent
  on 3.10), whether the box can take part and the steps when not; `edge-agent supernode-venv` builds that venv.
- `federated.tasks`: the task registry (names, get_task) central validates a run against.
- `federated.control`: central's client for its SuperLink's Control API.
- `federated.fab`: the code-free FAB central starts runs with.
- `federated.results`: a run's report and outcome, as central imports them.
- `federated.supervisor`: the child-process supervisor central runs its SuperLink under.
- `federated.superlink`: the command line (guarded, sandboxed) central starts its SuperLink with.
- `federated.superlink_credentials`: the client CA whose certificates alone open the SuperLink's Control API.

The rest (`flower_app`, `fast_supernode`, `superlink_guard`, `superlink_runtime`, `sandbox`, the tasks' own
modules) runs inside Flower's processes and is started by module name, never imported by the programs.
"""
