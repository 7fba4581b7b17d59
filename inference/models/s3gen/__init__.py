"""S3Gen: speech tokens to 24 kHz waveform (tokenizer, speaker x-vector, flow matching, HiFT vocoder)."""
