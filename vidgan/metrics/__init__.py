"""Video GAN scores with the UCF101 C3D classifier (tgan2 §5.7, docs/FIDELITY.md): Inception Score,
FID on fc7 features, and DDM on logits. ``vidgan.evaluate`` runs the published protocols."""
from vidgan.metrics.c3d import C3D, load_c3d, save_c3d
from vidgan.metrics.ddm import ddm
from vidgan.metrics.fid import frechet_distance, frechet_distance_to_features
from vidgan.metrics.inception_score import inception_score
from vidgan.metrics.stats import mean_cov

__all__ = ["C3D", "load_c3d", "save_c3d", "inception_score", "frechet_distance",
           "frechet_distance_to_features", "ddm", "mean_cov"]
