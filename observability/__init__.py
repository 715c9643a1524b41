"""What operators read: the health tree, Prometheus metrics and the live dashboard's reporter."""
