"""What every speech recognizer here shares: the encoders, the recognizer interface, the task and its metrics."""
