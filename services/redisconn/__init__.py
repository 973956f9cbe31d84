"""Redis connections built from settings (standalone, Sentinel, Cluster; ACL users; TLS), and the
per-slot plumbing that keeps batch reads and Lua scripts correct on a Redis Cluster."""
