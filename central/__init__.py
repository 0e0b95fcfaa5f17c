"""The coordinator and the ``edgefleet`` CLI: enrollment, fleet API, model registry, rollouts, federated runs."""
