"""Flower ClientApp/ServerApp and SecAgg+ settings (issue 5)."""
