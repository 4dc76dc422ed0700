"""What a user calls: predictors that wrap a SAM 2 model.

- `image.SAM2ImagePredictor`: prompts on one image.
- `amg.SAM2AutomaticMaskGenerator`: every object of one image (a grid of point prompts).
- `streaming.StreamingSession`: a live stream, frame by frame, with bounded memory.
- `multi_stream.track_streams`: one batched step over the frames of several sessions.
- `video.SAM2VideoPredictor`: a recorded video, with Meta's offline method names.
- `auto_seed`: first-frame seeding of a stream from the AMG.
"""
