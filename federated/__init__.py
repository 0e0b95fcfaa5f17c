"""Federated learning: Flower ClientApp/ServerApp, the tasks, SecAgg+ settings, SuperLink/SuperNode supervision."""
