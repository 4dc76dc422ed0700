"""Recorded video in batch: `track` (track.py), `segment` (segment.py), output writers
(outputs/)."""
