"""HTTP API (FastAPI) for E-control operators and technicians."""
