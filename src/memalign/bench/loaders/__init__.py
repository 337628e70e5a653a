"""Loaders for the real long-context suites (local official JSONL files; optional hub download)."""
