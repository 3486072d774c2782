"""semiseg: semi-supervised 3D medical image segmentation on nnU-Net v2 raw datasets."""
__version__ = "0.1.0"
