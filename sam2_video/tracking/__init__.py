"""The tracking step that the video predictors share.

- `tracker.FrameTracker`: one frame for every object of a stream, in one batch.
- `memory_bank`: per-object memory of past frames and its retention policy.
- `memory_layout`: lays the banks of many objects out as one padded batch.
- `object_chunks`: how many object rows a module takes at once on CPU.
"""
