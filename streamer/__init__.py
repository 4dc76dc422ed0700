"""The sam2-stream service, ingest, protocol and command line."""
