"""The HTTP client of the AgentOps v2 API (private: may change between releases)."""
