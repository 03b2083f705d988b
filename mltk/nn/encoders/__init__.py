"""Image encoders: the Vision Transformer, the masked autoencoder, and how an encoder is evaluated."""
