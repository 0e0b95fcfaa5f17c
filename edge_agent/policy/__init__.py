"""Data residency: classify prompts, decide where they may go."""
