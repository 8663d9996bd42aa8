"""tilecolor: colorize grayscale images of any size with a tiled pix2pix generator."""

__version__ = "0.1.0"
