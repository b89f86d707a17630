"""What the gateway reports: metrics shared across workers and the access log."""
