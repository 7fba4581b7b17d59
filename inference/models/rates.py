"""The family's fixed rates, in a module that imports nothing (the client and numpy-only tools read them too)."""

S3GEN_SR = 24000  # output audio
S3_SR = 16000  # what the speech tokenizer and the voice encoder hear
TOKEN_SAMPLES = 960  # output samples per 25 Hz speech token
