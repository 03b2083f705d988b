"""Image datasets: the official file formats, decoding and augmentation."""
