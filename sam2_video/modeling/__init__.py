"""The SAM 2 network: image encoder, prompt encoder, mask decoder, memory modules."""
