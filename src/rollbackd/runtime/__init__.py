"""The long-running daemon: its lifecycle, one runtime per service, the status socket, systemd and journald glue,
and the alerts it sends."""
