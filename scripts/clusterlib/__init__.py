"""The parts of ``scripts/cluster_check.py``: a local multi-node Ray cluster (``nodes``), the test-sized twin
of ``serve_config.yaml`` (``twin``), and the load with its ledger of acknowledged writes (``ledger``)."""
