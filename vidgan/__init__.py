"""vidgan: memory-efficient video GANs (TGANv2) in PyTorch."""
__version__ = "0.3.0"
