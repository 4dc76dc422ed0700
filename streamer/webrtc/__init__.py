"""WebRTC in and out: peers (peer.py), media tracks and ICE (media.py), HTTP routes
(routes.py), WHIP (whip.py)."""
