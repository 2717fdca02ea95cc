"""The long-running process: the loop (loop), its metrics and HTTP endpoints
(metrics, endpoints, listener, leak_webhook), systemd notification and
process hardening."""
