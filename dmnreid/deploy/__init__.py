"""Deployment on a real camera network: TLS certificates, SuperNode keys, device set-up."""
