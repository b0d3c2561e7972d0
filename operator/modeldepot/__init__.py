"""Model Depot: a Kubernetes operator that stocks nodes and volumes with verified Hugging Face models."""

__version__ = "0.1.0"
