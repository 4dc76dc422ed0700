"""The HTTP/websocket service: app factory, auth, metrics, websocket message handling."""
