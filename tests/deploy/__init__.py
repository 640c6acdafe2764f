"""The deployment artefacts: the Helm chart, rendered and validated offline."""
