"""What ships to run Tally: the ``tally`` command (the image's entry point) and its logging.

The image (``deploy/Dockerfile``), Kubernetes manifests (``deploy/k8s``), Grafana
provisioning and dashboards (``deploy/grafana``) and Prometheus's scrape and alert
rules (``deploy/prometheus``) live beside it. The no-Docker local stack is dev
tooling and lives in :mod:`stack`.
"""
