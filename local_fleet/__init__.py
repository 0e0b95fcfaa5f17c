"""The local-fleet launcher behind `make run` (`python -m local_fleet`): central and one agent on this machine.

It sits above edge_agent and central, the one place allowed to import both.
"""
