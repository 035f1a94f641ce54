"""Paraformer configs (LightningCLI YAML): tiny.yaml and the claim-check setting."""
